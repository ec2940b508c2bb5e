"""Write a PNG grid of synthetic pages at every corruption level, for a person to look at.

One row per page, one column per configured level; the same page and the same target region are
used across a row, so the columns differ only by the corruption. Each cell is labelled with its level
and the target's original text.

    python tasks/corruption_sheet.py
    python tasks/corruption_sheet.py corruption=readable rows=6 output=/tmp/sheet.png
    python tasks/corruption_sheet.py page_layout=tiny     # the tiny pipeline's large-print pages
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageDraw, ImageFont

from blocks.data.corruption import CorruptionConfig, corrupt_document
from blocks.data.synthetic.documents import PageLayout, random_page

LABEL_HEIGHT = 18
MARGIN = 6
BACKGROUND = (90, 90, 90)


def sheet_size(rows: int, columns: int, zoom: int, page_size: int = PageLayout().size) -> tuple[int, int]:
    """(width, height) in pixels of a sheet with ``rows`` pages of ``page_size`` and ``columns`` levels."""
    cell = page_size * zoom
    return columns * (cell + MARGIN) + MARGIN, rows * (cell + LABEL_HEIGHT + MARGIN) + MARGIN


def write_corruption_sheet(output: str | Path, corruption: CorruptionConfig | Mapping, rows: int = 4, seed: int = 0,
                           zoom: int = 3, layout: PageLayout | Mapping | None = None) -> Path:
    """Render ``rows`` pages at each level of ``corruption`` into a PNG at ``output``.

    Args:
        output: path of the PNG (parent directories are created).
        corruption: the level definitions (a ``CorruptionConfig`` or a mapping as in
            ``conf/corruption/default.yaml``); every level in ``levels`` gets a column, probabilities
            are ignored.
        rows: number of pages.
        seed: selects the pages.
        zoom: integer nearest-neighbour upscaling of each page.
        layout: the page layout (``PageLayout`` or a mapping of its fields); default ``PageLayout()``.

    Returns:
        The path written.
    """
    config = corruption if isinstance(corruption, CorruptionConfig) else CorruptionConfig.from_dict(corruption)
    config = replace(config, targets=1)
    layout = layout if isinstance(layout, PageLayout) else PageLayout.from_dict(layout)
    levels = list(config.levels)
    cell = layout.size * zoom
    sheet = Image.new("RGB", sheet_size(rows, len(levels), zoom, layout.size), BACKGROUND)
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default(size=14)
    for row in range(rows):
        page, regions, _, _ = random_page(random.Random(f"corruption-sheet/{seed}/{row}"), layout)
        for column, level in enumerate(levels):
            # The same stream per column: same target region, only the level differs.
            doc = corrupt_document(page, regions, config, random.Random(f"corruption-sheet/{seed}/{row}/target"),
                                   levels=[level])
            x, y = MARGIN + column * (cell + MARGIN), MARGIN + row * (cell + LABEL_HEIGHT + MARGIN)
            draw.text((x, y), f"{level}: {doc.targets[0].text}", fill=(255, 255, 255), font=font)
            sheet.paste(doc.image.resize((cell, cell), Image.Resampling.NEAREST), (x, y + LABEL_HEIGHT))
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


@hydra.main(version_base="1.3", config_path="../conf", config_name="corruption_sheet")
def main(cfg: DictConfig) -> None:
    path = write_corruption_sheet(cfg.output, OmegaConf.to_container(cfg.corruption, resolve=True), cfg.rows,
                                  cfg.seed, cfg.zoom, OmegaConf.to_container(cfg.page_layout, resolve=True))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
