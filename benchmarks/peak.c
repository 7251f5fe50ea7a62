/* One core's arithmetic limit: a tight loop of independent vector FMAs, timed in process CPU time.
 *
 *   cc -O2 -march=native -o peak peak.c && ./peak 200000000
 *
 * Prints "fp32 GFLOPS WIDTH" (WIDTH: the vector's bits) and "bf16 GFLOPS" or "bf16 none".
 * fp32: 12 accumulators (an FMA's latency of 4 cycles times 2 FMA pipes, plus slack) each
 * updated by a = a * b + c, 2 FLOPs per lane. bf16: AVX512_BF16's vdpbf16ps
 * (_mm512_dpbf16_ps): 32 bf16 products summed pairwise into 16 fp32 lanes, 64 FLOPs each.
 * Built with -march=native the widest vectors this CPU has are used (AVX-512, else AVX2).
 * AMX tiles are not measured here (they need the kernel's permission, arch_prctl).
 */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#define ACC 12
volatile float seed_b = 0.999999f, seed_c = 1e-7f;

#if defined(__AVX512F__)
typedef __m512 vec;
#define WIDTH 512
#define LANES 16
#define SET1(x) _mm512_set1_ps(x)
#define FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define SUM(v) _mm512_reduce_add_ps(v)
#elif defined(__FMA__)
typedef __m256 vec;
#define WIDTH 256
#define LANES 8
#define SET1(x) _mm256_set1_ps(x)
#define FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
static float SUM(__m256 v) {
    float f[8];
    _mm256_storeu_ps(f, v);
    return f[0] + f[1] + f[2] + f[3] + f[4] + f[5] + f[6] + f[7];
}
#else
#define WIDTH 0
#endif

static double fp32_peak(long iters, float *sink) {
#if WIDTH
    vec a[ACC], b = SET1(seed_b), c = SET1(seed_c);
    for (int k = 0; k < ACC; k++) a[k] = SET1((float)k);
    double t = cpu_now();
    for (long i = 0; i < iters; i++) {
#pragma GCC unroll 12
        for (int k = 0; k < ACC; k++) a[k] = FMA(a[k], b, c);
    }
    t = cpu_now() - t;
    float s = 0;
    for (int k = 0; k < ACC; k++) s += SUM(a[k]);
    *sink += s;
    return 2.0 * LANES * ACC * (double)iters / t;
#else
    (void)iters, (void)sink;
    return 0;
#endif
}

static double bf16_peak(long iters, float *sink) {
#if defined(__AVX512BF16__)
    __m512 a[ACC];
    __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3380);
    for (int k = 0; k < ACC; k++) a[k] = _mm512_set1_ps((float)k * seed_c);
    double t = cpu_now();
    for (long i = 0; i < iters; i++) {
#pragma GCC unroll 12
        for (int k = 0; k < ACC; k++) a[k] = _mm512_dpbf16_ps(a[k], x, y);
    }
    t = cpu_now() - t;
    float s = 0;
    for (int k = 0; k < ACC; k++) s += _mm512_reduce_add_ps(a[k]);
    *sink += s;
    return 64.0 * ACC * (double)iters / t;
#else
    (void)iters, (void)sink;
    return 0;
#endif
}

int main(int argc, char **argv) {
    long iters = argc > 1 ? atol(argv[1]) : 50000000L;
    float sink = 0;
    double f = fp32_peak(iters, &sink), b = bf16_peak(iters, &sink);
    printf("fp32 %.3f %d\n", f / 1e9, WIDTH);
    if (b > 0)
        printf("bf16 %.3f\n", b / 1e9);
    else
        printf("bf16 none\n");
    fprintf(stderr, "sink %g\n", (double)sink);  /* the results are used: nothing is elided */
    return 0;
}
