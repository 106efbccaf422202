"""Data readers, writers and generators.

- `deepmd`: the DeePMD-kit `npy` system format (`read_system`, `read_systems`, `write_system`,
  `System`, `describe`).
- `atoms`: conversions between `System` frames and `ase.Atoms`, and `thermalize` (Maxwell-
  Boltzmann momenta) (needs ASE, extra `md`).
- `emt`: labelled data sets generated with an ASE calculator (EMT for Al, Cu and Al-Cu by default),
  cached under `~/.cache/mlcmk/deepmd` (`MLCMK_CACHE_DIR` overrides the root).
"""

from mlcmk.data.atoms import frames_to_atoms, label_frames, system_from_atoms, thermalize
from mlcmk.data.deepmd import (
    System,
    describe,
    find_systems,
    format_description,
    is_system,
    read_system,
    read_systems,
    write_system,
)
from mlcmk.data.emt import (
    DatasetPaths,
    al_dataset,
    alcu_dataset,
    default_cache_dir,
    generate_dataset,
)
