"""Config files of :mod:`pyg_wpdd.train`: defaults, validation, overrides, and the transforms
and models they describe."""
import copy
import inspect
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import yaml

from .nn import CGCNN, WPDDFormer

MODELS = {'wpddformer': WPDDFormer, 'cgcnn': CGCNN}
DATASETS = ('perov_5', 'folder', 'csv')

# Every key a config may set. The model section also takes the constructor arguments of the
# chosen model, checked against its signature.
DEFAULT_CONFIG: Dict[str, Any] = {
    'seed': 0,
    'out_dir': None,
    'data': {
        # 'perov_5': the CSV files of data/crystals/perov_5 named in 'splits', pooled.
        # 'folder': CIF/POSCAR files plus id_prop.csv in 'root'.
        # 'csv': one CSV file 'root' with a CIF-text column 'cif_column'.
        'dataset': 'perov_5',
        'root': None,
        'splits': ['val', 'test'],
        'target': 'heat_ref',
        'cif_column': 'cif',
        'id_column': 'material_id',
        # A seeded subset of this many crystals, read without a cache; null loads all of
        # them through pyg_wpdd.datasets, which caches the graphs under cache_root
        # (default: $PYG_WPDD_CACHE or ~/.cache/pyg_wpdd).
        'max_crystals': None,
        'cache_root': None,
        'split_fractions': [0.8, 0.1, 0.1],
    },
    'graph': {
        'knn_k': 16,
        'wpdd_k': 50,
        'wpdd_weighting': 'mean_normalised',
        'updd': False,
        'updd_max_atoms': 256,
    },
    'model': {
        'name': 'wpddformer',
    },
    'train': {
        'epochs': 100,
        'batch_size': 64,
        'eval_batch_size': 256,
        'lr': 1.0e-3,
        'weight_decay': 1.0e-5,
        'pct_start': 0.3,
        'max_minutes': None,
        'device': 'auto',
        'num_threads': None,
        'progress': True,
    },
}

# Model arguments the config fills in from the graph section.
DERIVED_MODEL_KEYS = ('wpdd_dim', 'use_updd', 'out_channels')


def merge_config(base: Dict[str, Any], update: Dict[str, Any], prefix: str = '') -> Dict[str, Any]:
    """Returns ``base`` updated with ``update``, raising on keys that ``base`` lacks (except
    in the model section, which :func:`validate_config` checks against the model)."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        dotted = f'{prefix}{key}'
        if key not in base and dotted.split('.')[0] != 'model':
            valid = ', '.join(f'{prefix}{k}' for k in base)
            raise ValueError(f"unknown config key '{dotted}': valid keys here are {valid}")
        if isinstance(base.get(key), dict):
            if not isinstance(value, dict):
                raise ValueError(f"config key '{dotted}' must be a mapping (got {value!r})")
            merged[key] = merge_config(base[key], value, f'{dotted}.')
        else:
            merged[key] = value
    return merged


def parse_overrides(items: Sequence[str]) -> Dict[str, Any]:
    """Turns ``['train.epochs=5', 'model.channels=64']`` into a nested dict; values are
    parsed as YAML, so ``5`` is an int and ``null`` is None."""
    result: Dict[str, Any] = {}
    for item in items:
        if '=' not in item:
            raise ValueError(f"invalid override '{item}': use KEY=VALUE, e.g. train.epochs=5")
        key, raw = item.split('=', 1)
        parts = key.strip().split('.')
        if not all(parts):
            raise ValueError(f"invalid override key '{key}': use dotted names such as "
                             f"train.epochs")
        node = result
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return result


def _check_positive_int(value: Any, key: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"config key '{key}' must be a positive integer (got {value!r})")


def _check_positive_number(value: Any, key: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"config key '{key}' must be a positive number (got {value!r})")


def validate_config(config: Dict[str, Any]) -> None:
    """Raises :class:`ValueError` naming the first invalid value in ``config``."""
    if not isinstance(config['seed'], int) or isinstance(config['seed'], bool):
        raise ValueError(f"config key 'seed' must be an integer (got {config['seed']!r})")

    data = config['data']
    if data['dataset'] not in DATASETS:
        raise ValueError(f"unknown data.dataset '{data['dataset']}': use one of "
                         f"{list(DATASETS)}")
    if data['dataset'] != 'perov_5' and data['root'] is None:
        raise ValueError(f"data.root is required for data.dataset='{data['dataset']}'")
    if not isinstance(data['target'], str):
        raise ValueError(f"data.target must be a column name (got {data['target']!r})")
    _check_positive_int(data['max_crystals'], 'data.max_crystals', allow_none=True)
    fractions = data['split_fractions']
    if (not isinstance(fractions, (list, tuple)) or len(fractions) != 3
            or any(isinstance(f, bool) or not isinstance(f, (int, float)) or f < 0
                   for f in fractions)
            or fractions[0] <= 0 or abs(sum(fractions) - 1.0) > 1e-6):
        raise ValueError(f"data.split_fractions must be three non-negative numbers "
                         f"[train, val, test] with train > 0 that sum to 1 "
                         f"(got {fractions!r})")

    graph = config['graph']
    _check_positive_int(graph['knn_k'], 'graph.knn_k')
    _check_positive_int(graph['wpdd_k'], 'graph.wpdd_k')
    _check_positive_int(graph['updd_max_atoms'], 'graph.updd_max_atoms')
    if not isinstance(graph['updd'], bool):
        raise ValueError(f"graph.updd must be true or false (got {graph['updd']!r})")

    model = config['model']
    if model.get('name') not in MODELS:
        raise ValueError(f"unknown model.name {model.get('name')!r}: use one of "
                         f"{list(MODELS)}")
    accepted = set(inspect.signature(MODELS[model['name']].__init__).parameters) - {'self'}
    for key in model:
        if key == 'name':
            continue
        if key in DERIVED_MODEL_KEYS:
            raise ValueError(f"model.{key} is set from the graph section and the targets; "
                             f"remove it from the config")
        if key not in accepted:
            valid = sorted(accepted - set(DERIVED_MODEL_KEYS))
            raise ValueError(f"unknown config key 'model.{key}' for {model['name']}: valid "
                             f"keys are {valid}")

    train = config['train']
    _check_positive_int(train['epochs'], 'train.epochs')
    _check_positive_int(train['batch_size'], 'train.batch_size')
    _check_positive_int(train['eval_batch_size'], 'train.eval_batch_size')
    _check_positive_int(train['num_threads'], 'train.num_threads', allow_none=True)
    _check_positive_number(train['lr'], 'train.lr')
    _check_positive_number(train['max_minutes'], 'train.max_minutes', allow_none=True)
    if isinstance(train['weight_decay'], bool) or not isinstance(
            train['weight_decay'], (int, float)) or train['weight_decay'] < 0:
        raise ValueError(f"train.weight_decay must be a non-negative number "
                         f"(got {train['weight_decay']!r})")
    if not (isinstance(train['pct_start'], (int, float)) and 0 < train['pct_start'] < 1):
        raise ValueError(f"train.pct_start must lie in (0, 1) (got {train['pct_start']!r})")
    resolve_device(train['device'])


def load_config(path_or_dict: Any, overrides: Optional[Dict[str, Any]] = None
                ) -> Dict[str, Any]:
    """Reads a YAML config (or takes a dict), fills in defaults, applies ``overrides`` and
    validates the result."""
    if isinstance(path_or_dict, dict):
        raw = copy.deepcopy(path_or_dict)
    else:
        path = Path(path_or_dict)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: '{path}'")
        with open(path, encoding='utf-8') as f:
            raw = yaml.safe_load(f) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"config '{path}' must contain a YAML mapping at the top level")

    config = merge_config(DEFAULT_CONFIG, raw)
    if overrides:
        config = merge_config(config, overrides)
    validate_config(config)
    return config


def resolve_device(name: str) -> torch.device:
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"invalid train.device {name!r}: use 'auto', 'cpu' or 'cuda[:N]'"
                         ) from error
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f"train.device is {name!r} but CUDA is not available: use 'auto' "
                         f"or 'cpu'")
    return device


def build_transform(graph_cfg: Dict[str, Any]):
    """Returns the transform that turns a structure read by :mod:`pyg_wpdd.io` into a model
    input: periodic k-NN edges, WPDD rows and, optionally, the UPDD matrix."""
    from torch_geometric.transforms import Compose

    from .transforms import UPDD, WPDD, PeriodicKNNGraph

    transforms: List[Any] = [
        PeriodicKNNGraph(k=graph_cfg['knn_k']),
        WPDD(k=graph_cfg['wpdd_k'], weighting=graph_cfg['wpdd_weighting']),
    ]
    if graph_cfg['updd']:
        transforms.append(UPDD(max_atoms=graph_cfg['updd_max_atoms']))
    return Compose(transforms)


def build_model(model_cfg: Dict[str, Any], graph_cfg: Dict[str, Any],
                num_targets: int = 1) -> torch.nn.Module:
    kwargs = {k: v for k, v in model_cfg.items() if k != 'name'}
    kwargs['out_channels'] = num_targets
    if model_cfg['name'] == 'wpddformer':
        kwargs['wpdd_dim'] = graph_cfg['wpdd_k'] + 1
        kwargs['use_updd'] = graph_cfg['updd']
    return MODELS[model_cfg['name']](**kwargs)
