"""Model zoo: `build_model(name)`, `build_from_config(model.config)`."""
from .zoo import MODELS, MODEL_DATA, ZooModel, build_from_config, build_model  # noqa: F401
