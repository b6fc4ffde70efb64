"""The built-in model zoo: small, pure JAX models used by the demo, tests and benchmarks."""

from . import cnn as _cnn  # noqa: F401  (registers "cnn")
from . import mixers as _mixers  # noqa: F401  (registers "batchnorm_train", "contrastive", ...)
from . import mlp as _mlp  # noqa: F401  (registers "mlp")
from . import preprocess as _preprocess  # noqa: F401  (registers "preprocess")
from . import transformer as _transformer  # noqa: F401  (registers "transformer")
from ._registry import Model as Model
from ._registry import available_models as available_models
from ._registry import get_model as get_model
from ._registry import register_model as register_model
