"""dno: Direct Nash Optimization (Rosset et al., arXiv 2404.03715), a reference reproduction."""

__version__ = "0.1.0"
