"""Sample quality: domain-classifier features (FD, precision/recall, classifier IS, class
coverage), Inception metrics through torch-fidelity, and 2-D mode metrics."""
