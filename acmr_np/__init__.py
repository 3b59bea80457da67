"""acmr_np: Adversarial Cross-Modal Retrieval (Wang et al., ACM MM 2017) from scratch in NumPy.

Every layer writes its backward pass by hand; the same code runs on CuPy.
"""
__version__ = "0.1.0"
