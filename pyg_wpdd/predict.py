r"""Predict a crystal property with a checkpoint written by :mod:`pyg_wpdd.train`.

Usage::

    python -m pyg_wpdd.predict outputs/pyg_wpdd/run/checkpoint.pt structure.cif POSCAR dir/ \
        [--output predictions.csv] [--batch-size 64] [--device auto]

Each argument is a structure file (CIF, POSCAR/CONTCAR, ``*.vasp``, extended XYZ) or a folder
whose structure files are all read. Graphs are rebuilt with the transforms recorded in the
checkpoint's config, and the predictions, in target units, are printed as CSV
(``file,material_id,<target>``) and written to ``--output`` if given.
"""
import argparse
import csv
import io
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch_geometric.loader import DataLoader

from ._files import give_default_permissions
from ._train_config import build_model, build_transform, load_config, resolve_device
from .io import read_structure
from .transforms import transform_batch

STRUCTURE_SUFFIXES = ('.cif', '.vasp', '.poscar', '.xyz', '.extxyz')
STRUCTURE_PREFIXES = ('POSCAR', 'CONTCAR')


def load_checkpoint(path: Any, device: Optional[torch.device] = None
                    ) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """Loads a checkpoint of :mod:`pyg_wpdd.train` and returns ``(model, checkpoint)`` with
    the model in eval mode.

    The file holds only tensors and plain Python values, so it loads with
    ``torch.load(..., weights_only=True)``, the default since torch 2.6.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: '{path}'")
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError) as error:
        # torch's message would suggest weights_only=False, which is unsafe for a file of
        # unknown origin and would not make it a pyg_wpdd checkpoint either.
        raise ValueError(
            f"'{path}' is not a checkpoint written by pyg_wpdd.train (torch.load failed with "
            f"{type(error).__name__}). Pass the checkpoint.pt from the training --out-dir."
        ) from None
    for key in ('model_state', 'config', 'target_mean', 'target_std'):
        if not isinstance(checkpoint, dict) or key not in checkpoint:
            raise ValueError(f"'{path}' is not a pyg_wpdd.train checkpoint: key '{key}' is "
                             f"missing")

    config = load_config(checkpoint['config'])
    model = build_model(config['model'], config['graph'],
                        num_targets=len(checkpoint['target_mean']))
    model.load_state_dict(checkpoint['model_state'])
    model.to(device or torch.device('cpu')).eval()
    checkpoint['config'] = config
    return model, checkpoint


def find_structure_files(paths: Sequence[Any]) -> List[Path]:
    """Expands folders into their structure files (sorted by name) and checks that every
    listed file exists."""
    files: List[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir()
                if p.is_file() and (p.suffix.lower() in STRUCTURE_SUFFIXES
                                    or p.name.upper().startswith(STRUCTURE_PREFIXES)))
            if not found:
                raise FileNotFoundError(
                    f"no structure files in folder '{path}': expected names ending in "
                    f"{list(STRUCTURE_SUFFIXES)} or starting with {list(STRUCTURE_PREFIXES)}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"structure file or folder not found: '{path}'")
    return files


@torch.no_grad()
def predict_files(model: torch.nn.Module, checkpoint: Dict[str, Any], files: Sequence[Path],
                  batch_size: int = 64, device: Optional[torch.device] = None,
                  **read_options: Any) -> List[Dict[str, Any]]:
    """Returns one row per file: ``file``, ``material_id`` and a prediction per target.

    ``read_options`` (``format``, ``occupancy``, ``merge_tol``) go to
    :func:`~pyg_wpdd.io.read_structure` for every file.
    """
    device = device or torch.device('cpu')
    config = checkpoint['config']
    crystals = [read_structure(path, **read_options) for path in files]
    graphs = transform_batch(build_transform(config['graph']), crystals)

    mean = torch.tensor(checkpoint['target_mean'], device=device)
    std = torch.tensor(checkpoint['target_std'], device=device)
    preds = []
    for batch in DataLoader(graphs, batch_size=batch_size):
        preds.append((model(batch.to(device)) * std + mean).cpu())
    pred = torch.cat(preds)

    target = config['data']['target']
    names = [target] if pred.size(1) == 1 else [f'{target}_{i}' for i in range(pred.size(1))]
    rows = []
    for path, data, values in zip(files, graphs, pred.tolist()):
        row = {'file': str(path), 'material_id': getattr(data, 'material_id', path.stem)}
        row.update(dict(zip(names, values)))
        rows.append(row)
    return rows


def rows_to_csv(rows: Sequence[Dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator='\n')
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m pyg_wpdd.predict',
        description='Predict a crystal property for CIF/POSCAR files with a checkpoint '
                    'written by python -m pyg_wpdd.train.')
    parser.add_argument('checkpoint', help='checkpoint.pt written by pyg_wpdd.train')
    parser.add_argument('inputs', nargs='+', metavar='FILE_OR_DIR',
                        help='structure files, or folders of them')
    parser.add_argument('--output', default=None, help='also write the CSV to this file')
    parser.add_argument('--batch-size', type=int, default=64,
                        help='crystals per forward pass (default: 64)')
    parser.add_argument('--device', default='auto',
                        help="'auto' (CUDA if available), 'cpu' or 'cuda[:N]' (default: auto)")
    parser.add_argument('--format', default=None,
                        help="ASE format of every input, e.g. 'cif' or 'vasp' "
                             '(default: guessed from each file name)')
    parser.add_argument('--occupancy', choices=['error', 'majority'], default='error',
                        help="partially occupied sites: 'error' stops, 'majority' keeps the "
                             'main species of each site (default: error)')
    parser.add_argument('--merge-tol', type=float, default=None, metavar='ANGSTROM',
                        help='merge atoms closer than this distance instead of stopping '
                             '(default: stop on atoms closer than 1e-3 Å)')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise ValueError(f'--batch-size must be a positive integer (got {args.batch_size})')
    device = resolve_device(args.device)
    model, checkpoint = load_checkpoint(args.checkpoint, device)
    files = find_structure_files(args.inputs)
    rows = predict_files(model, checkpoint, files, args.batch_size, device,
                         format=args.format, occupancy=args.occupancy, merge_tol=args.merge_tol)

    text = rows_to_csv(rows)
    print(text, end='')
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f'.{output.name}.')
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(text)
        give_default_permissions(tmp)
        os.replace(tmp, output)
        print(f'wrote {output}')
    return rows


def _command_line() -> None:
    """Run :func:`main`, turning bad input into a usage error instead of a traceback."""
    try:
        main()
    except (ValueError, FileNotFoundError) as error:
        message = str(error)
        # read_structure names its Python options; the message adds the matching flags.
        if any(option in message for option in ('occupancy=', 'merge_tol=', 'format=')):
            message += ('\n(On this command line, --format, --occupancy and --merge-tol set '
                        'those options of read_structure.)')
        build_parser().error(message)


if __name__ == '__main__':
    _command_line()
