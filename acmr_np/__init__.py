"""acmr_np: Adversarial Cross-Modal Retrieval (Wang et al., ACM MM 2017) from scratch in NumPy.

Every layer writes its backward pass by hand; the same code runs on CuPy. From Python:

    import acmr_np
    data = acmr_np.PairedDataset.from_arrays(train=(img, txt, labels), test=(img_t, txt_t, labels_t))
    model, history = acmr_np.fit(data, acmr_np.ACMRConfig(), acmr_np.TrainConfig(epochs=30))
    print(acmr_np.evaluate(model, data.test))
    idx, scores = acmr_np.retrieve(model.embed_texts(txt_t[:5]), model.embed_images(img_t), k=10)
    acmr_np.save_model("model.npz", model); model = acmr_np.load_model("model.npz")

See the README's section "From Python".
"""
__version__ = "0.2.0"

# The public names, each from its module. They are imported on first use (PEP 562), so
# importing one module of the package (acmr_np.losses, say) loads only what that module
# needs: a student's broken layers.py cannot stop the losses from being graded.
_EXPORTS = {
    "ACMR": "model", "ACMRConfig": "config", "TrainConfig": "config",
    "PairedDataset": "datasets", "Split": "datasets", "load_dataset": "formats", "load_split": "formats",
    "make_synthetic": "synthetic", "make_synthetic_multilabel": "synthetic",
    "fit": "training", "evaluate": "training", "batches": "training", "Batch": "training",
    "History": "training", "Training": "training", "Trainer": "trainer",
    "save_model": "checkpoint", "load_model": "checkpoint",
    "retrieve": "ranking", "evaluate_retrieval": "metrics", "mean_average_precision": "metrics",
    "get_backend": "backend", "get_array_module": "backend", "to_device": "backend", "to_host": "backend",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'acmr_np' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
