"""Package a store-side plugin as the zip a merchant uploads.

    python3 plugins/package.py [--out DIR]      # -> DIR/bridge-agent-wordpress-<version>.zip

WordPress's "Plugins > Add New > Upload Plugin" wants a zip holding one folder, named as the
plugin's slug (`bridge-agent/`), with the main file inside it. The version comes from the main
file's `Version:` header, so the file name cannot drift from the plugin. The zip is reproducible:
entries sorted, fixed timestamps and modes, so the same sources give the same bytes (and the
same checksum to publish).

Standard library only: `make plugin-zip` runs it before any environment exists.
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORDPRESS = HERE / "woocommerce"
SLUG = "bridge-agent"
MAIN_FILE = "bridge-agent.php"
EPOCH = (2026, 1, 1, 0, 0, 0)  # zip has no time zone; any fixed date makes builds reproducible


def version(main_file: Path) -> str:
    """The `Version:` header of a WordPress plugin's main file."""
    match = re.search(r"^\s*\*\s*Version:\s*(\S+)", main_file.read_text(encoding="utf-8"), re.M)
    if match is None:
        raise ValueError(f"{main_file} has no 'Version:' header")
    return match.group(1)


def build(out_dir: Path, source: Path = WORDPRESS) -> Path:
    """Write the WordPress plugin's zip into `out_dir`; returns its path."""
    files = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{SLUG}-wordpress-{version(source / MAIN_FILE)}.zip"
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            info = zipfile.ZipInfo(f"{SLUG}/{path.relative_to(source).as_posix()}", EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE.parent / "dist")
    args = parser.parse_args()
    print(build(args.out))
    sys.exit(0)


if __name__ == "__main__":
    main()
