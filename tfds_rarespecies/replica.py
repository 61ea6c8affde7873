"""Writes a stand-in for the Rare Species download: real metadata rows, synthetic pixels.

The real images cannot be fetched everywhere (CI, benchmarks on a closed machine), so tests, the embedded
demo sample and the benchmarks build from a replica in either layout. Pixels are learnable on purpose: each
family has its own colour and stripe pattern (family_pattern), so a model that trains correctly scores far above
chance; or, for comparisons across the tree, the pixels carry the taxonomy (taxonomy_pattern): sister families
look alike as they do in real photos.
"""

import colorsys
import functools
import hashlib
import os
import pathlib

import numpy as np
import pandas as pd
from PIL import Image

from tfds_rarespecies import catalog, labels

FILE_SUFFIX = "_eol-full-size-copy.jpg"


def select_rows(metadata: pd.DataFrame, families: int | None = None, per_family: int | None = None,
                images: int | None = None, seed: int = 0) -> pd.DataFrame:
    """A reproducible subset of the real course metadata: `families` families x `per_family` rows, or
    `images` rows stratified over all families."""
    rng = np.random.default_rng(seed)
    frame = metadata.sort_values("rare_species_id").reset_index(drop=True)
    if families is not None:
        chosen = sorted(rng.choice(sorted(frame["family"].unique()), families, replace=False))
        frame = frame[frame["family"].isin(chosen)]
    if per_family is not None:
        frame = frame.groupby("family", group_keys=False).head(per_family)
    if images is not None and images < len(frame):
        frame = frame.sample(images, random_state=seed).sort_values("rare_species_id")
    return frame.reset_index(drop=True)


def family_pattern(family: str, width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """An RGB image whose colour and stripe direction say which family it is.

    Phase, stripe frequency and a dark blob (the "animal") vary per image, so two images of one family are
    perceptually distinct (their perceptual hashes differ) like two real photos of one family are.
    """
    digest = hashlib.sha256(family.encode()).digest()
    index = labels.families().index(family) if family in labels.families() else digest[3]  # any collection
    colour = np.array([digest[0], digest[1], digest[2]], dtype=np.float32) * 0.8 + 40
    small_w, small_h = max(16, width // 8), max(16, height // 8)
    yy, xx = np.mgrid[0:small_h, 0:small_w].astype(np.float32) / max(small_w, small_h)
    angle = (index % 8) * np.pi / 8 + rng.uniform(-0.15, 0.15)
    frequency = rng.uniform(6, 14)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * (np.cos(angle) * xx + np.sin(angle) * yy)
                                 + rng.uniform(0, 2 * np.pi))
    cy, cx, radius = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
    blob = ((yy * max(small_w, small_h) / small_h - cy) ** 2 + (xx * max(small_w, small_h) / small_w - cx) ** 2
            < radius ** 2)
    pixels = colour * (0.45 + 0.55 * stripes[..., None]) * np.where(blob, 0.35, 1.0)[..., None]
    pixels += rng.normal(0, 10, pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image.resize((width, height), Image.BILINEAR)


@functools.cache
def _tree_codes() -> pd.DataFrame:
    """Per EOL page id, the position of its class, order and family among their siblings in the shipped tree
    and its class's slot on the colour wheel: the classes in tree order, a gap of 1.5 slots between phyla."""
    tree = labels.taxonomy()
    table = tree.set_index("eol_page_id")
    classes = tree[["phylum", "class"]].drop_duplicates().sort_values(["phylum", "class"])
    phylum_position = {name: i for i, name in enumerate(sorted(classes["phylum"].unique()))}
    slots = {name: i + 1.5 * phylum_position[phylum] for i, (phylum, name) in enumerate(classes.values)}
    table["hue"] = table["class"].map(slots) / (len(classes) + 1.5 * len(phylum_position))
    table["class_position"] = table["class"].map({name: i for i, name in enumerate(classes["class"])})
    for rank, parent in (("order", "class"), ("family", "order")):
        siblings = tree[[parent, rank]].drop_duplicates().sort_values([parent, rank])
        table[f"{rank}_position"] = table[rank].map(dict(zip(siblings[rank], siblings.groupby(parent).cumcount())))
    return table


def taxonomy_pattern(eol_page_id: int, width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """An RGB image built from the species' place in the shipped tree, coarse ranks the most visible as in real
    photos: a hue by class, the classes of one phylum side by side on the colour wheel and the phyla apart (the
    saturation alternates between neighbouring classes); a stripe texture by order; the number, size and
    darkness of blobs by family; a small tint and noise level by species. Siblings (the orders of a class, the
    families of an order) never share a texture or a blob layout, so sister families look alike but differ.
    """
    codes = _tree_codes().loc[int(eol_page_id)]
    species = hashlib.sha256(f"species:{codes['species']}".encode()).digest()
    darkness = hashlib.sha256(f"family:{codes['family']}".encode()).digest()[0] % 3
    order, family = int(codes["order_position"]), int(codes["family_position"])
    small_w, small_h = max(16, width // 8), max(16, height // 8)
    yy, xx = np.mgrid[0:small_h, 0:small_w].astype(np.float32) / max(small_w, small_h)
    angle = (order % 8) * np.pi / 8 + rng.uniform(-0.1, 0.1)
    frequency = 4 + 3 * (order // 8) + rng.uniform(-0.5, 0.5)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * (np.cos(angle) * xx + np.sin(angle) * yy)
                                 + rng.uniform(0, 2 * np.pi))
    saturation = 0.8 if codes["class_position"] % 2 else 0.5
    colour = 255 * np.array(colorsys.hsv_to_rgb(codes["hue"], saturation, 0.9), dtype=np.float32)
    colour += (np.array(list(species[:3]), dtype=np.float32) - 127.5) * 0.08
    pixels = colour * (0.45 + 0.55 * stripes[..., None])
    shade = np.ones_like(yy)
    for _ in range(1 + family % 3):
        cy, cx = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8)
        radius = 0.08 + (family // 3 % 5) * 0.04
        inside = ((yy * max(small_w, small_h) / small_h - cy) ** 2
                  + (xx * max(small_w, small_h) / small_w - cx) ** 2) < radius ** 2
        shade = np.where(inside, 0.25 + darkness * 0.2, shade)
    pixels = pixels * shade[..., None] + rng.normal(0, 6 + species[3] % 8, pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image.resize((width, height), Image.BILINEAR)


PIXELS = {"family": 1, "taxonomy": 2}  # kind -> version of its pattern (2: taxonomy hues from the tree)


def write_replica(out_dir: os.PathLike, rows: pd.DataFrame, layout: str = "course",
                  taxonomy: pd.DataFrame | None = None, min_side: int = 400, max_side: int = 2400,
                  quality: int = 85, seed: int = 0, pixels: str = "family") -> pathlib.Path:
    """Writes metadata and one JPEG per row under out_dir in the given layout; returns out_dir.

    rows: course-layout metadata rows (columns catalog.COURSE_COLUMNS). taxonomy: Imageomics' annotation
    (rare_species_taxonomy.csv columns); required for the imageomics layout, written beside metadata.csv for
    the course layout when given. Image sides are drawn between min_side and max_side like the real files.
    pixels: "family" (family_pattern) or "taxonomy" (taxonomy_pattern, by the row's EOL page id).
    """
    if pixels not in PIXELS:
        raise ValueError(f"unknown pixels {pixels!r}: use one of {', '.join(PIXELS)}")
    out_dir = pathlib.Path(out_dir)
    rng = np.random.default_rng(seed)
    file_names = rows["file_path"].map(lambda p: p.rsplit("/", 1)[-1])
    if layout == "course":
        out_dir.mkdir(parents=True, exist_ok=True)
        rows[list(catalog.COURSE_COLUMNS)].to_csv(out_dir / catalog.COURSE_METADATA, index=False)
        folders = rows["file_path"].map(lambda p: p.rsplit("/", 1)[0] if "/" in p else "")
        if taxonomy is not None:
            taxonomy_rows = _taxonomy_for(file_names, taxonomy)
            taxonomy_rows.to_csv(out_dir / catalog.TAXONOMY_FILES[0], index=False)
    elif layout == "imageomics":
        taxonomy_rows = _taxonomy_for(file_names, taxonomy)
        (out_dir / "metadata").mkdir(parents=True, exist_ok=True)
        _imageomics_catalog(rows, taxonomy_rows).to_csv(out_dir / catalog.IMAGEOMICS_METADATA, index=False)
        folders = "dataset/" + taxonomy_rows["class"].str.replace(" ", "_").str.lower()
    else:
        raise ValueError(f"unknown layout {layout!r}: use 'course' or 'imageomics'")
    for name, folder, family, page in zip(file_names, folders, rows["family"], rows["eol_page_id"]):
        width, height = (int(side) for side in rng.integers(min_side, max_side + 1, size=2))
        target = out_dir / folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        image = (family_pattern(family, width, height, rng) if pixels == "family"
                 else taxonomy_pattern(page, width, height, rng))
        image.save(target, "JPEG", quality=quality)
    return out_dir


def write_licenses(out_dir: os.PathLike, rows: pd.DataFrame) -> None:
    """metadata/licenses.csv for an imageomics replica, with the md5 of each written file."""
    out_dir = pathlib.Path(out_dir)
    files = {path.name: path for path in out_dir.rglob(f"*{FILE_SUFFIX}")}
    names = rows["file_path"].map(lambda p: p.rsplit("/", 1)[-1])
    licenses = pd.DataFrame({
        "rarespecies_id": rows["rare_species_id"], "eol_content_id": rows["eol_content_id"],
        "eol_page_id": rows["eol_page_id"],
        "md5": [hashlib.md5(files[name].read_bytes()).hexdigest() for name in names],
        "eol_full_size_copy_url": "https://content.eol.org/data/media/" + names,
        "license_name": "cc-by-nc 3.0", "copyright_owner": "replica"})
    licenses.to_csv(out_dir / catalog.IMAGEOMICS_LICENSES, index=False)


def _taxonomy_for(file_names: pd.Series, taxonomy: pd.DataFrame) -> pd.DataFrame:
    if taxonomy is None:
        raise ValueError("the imageomics layout needs the taxonomy table (rare_species_taxonomy.csv)")
    by_name = taxonomy.assign(file_name=taxonomy["filepath"].str.rsplit("/", n=1).str[-1]).set_index("file_name")
    return by_name.loc[file_names.tolist()].reset_index(drop=True)


def _imageomics_catalog(rows: pd.DataFrame, taxonomy_rows: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "rarespecies_id": rows["rare_species_id"].to_numpy(), "eol_content_id": rows["eol_content_id"].to_numpy(),
        "eol_page_id": rows["eol_page_id"].to_numpy(), "kingdom": taxonomy_rows["kingdom"],
        "phylum": taxonomy_rows["phylum"], "class": taxonomy_rows["cls"], "order": taxonomy_rows["order"],
        "family": taxonomy_rows["family"], "genus": taxonomy_rows["genus"], "species": taxonomy_rows["species"],
        "sciName": taxonomy_rows["class"], "common": taxonomy_rows["common_name"]})
