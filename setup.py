from setuptools import find_packages, setup

setup(
    name="acmr_np",
    version="0.1.0",
    description="Adversarial Cross-Modal Retrieval (ACMR) from scratch in NumPy, with manual backpropagation",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["acmr_np", "acmr_np.*"]),
    # the exercises' plan; in a student copy also the public checks' numbers
    package_data={"acmr_np.assignment": ["plan.json", "public.npz"]},
    python_requires=">=3.9",
    install_requires=["numpy>=1.22", "scipy>=1.8", "threadpoolctl>=3.1"],  # threadpoolctl: --threads
    extras_require={
        "gpu": ["cupy-cuda12x"],
        "h5": ["h5py>=3"],
        "plot": ["matplotlib>=3.5"],
        "test": ["pytest>=7", "h5py>=3"],
    },
    entry_points={"console_scripts": ["acmr-train=acmr_np.train:main"]},
)
