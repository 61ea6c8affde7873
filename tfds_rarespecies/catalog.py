"""Reads a Rare Species download (course or Imageomics layout) into one validated table.

Both layouts end as the same pandas table (CATALOG_COLUMNS), one row per metadata row, with the image file
found at the metadata's relative path first (the course layout's file_path), else by its base name anywhere
under the root; a same-named file that is not read, a file read from elsewhere than its metadata path, and a
name that several files share without one at the path are all reported, never chosen silently. Problems with
the metadata itself fail fast as `MetadataError`: one line naming the file, the row and the column, and what
to do.
"""

import codecs
import collections
import dataclasses
import io
import os
import pathlib
import posixpath

import pandas as pd

from tfds_rarespecies import errors, labels
from tfds_rarespecies.imaging import IMAGE_SUFFIXES

COURSE_METADATA = "metadata.csv"
COURSE_COLUMNS = ("rare_species_id", "eol_content_id", "eol_page_id", "kingdom", "phylum", "family", "file_path")
TAXONOMY_FILES = ("rare_species_taxonomy.csv", "taxonomy.csv")
TAXONOMY_COLUMNS = ("cls", "order", "genus", "species", "common_name", "filepath", "class")
IMAGEOMICS_METADATA = os.path.join("metadata", "rarespecies-catalog.csv")
IMAGEOMICS_COLUMNS = ("rarespecies_id", "eol_content_id", "eol_page_id", "kingdom", "phylum", "class", "order",
                      "family", "genus", "species", "sciName", "common")
IMAGEOMICS_LICENSES = os.path.join("metadata", "licenses.csv")
LICENSE_COLUMNS = ("eol_content_id", "md5", "license_name", "copyright_owner")
EXCLUSIONS_FILE = "exclusions.csv"
EXCLUSION_COLUMNS = ("rare_species_id", "reason")
SHIPPED_TAXONOMY = "shipped annotation"
NO_TAXONOMY = "download, which has none"
LABEL_SOURCES = ("shipped", "from_metadata")  # the builder config's `labels`

LOWER_RANKS = ("class", "order", "genus", "species")  # phylum and family come with every layout's metadata
TEXT_COLUMNS = ("rare_species_id", "kingdom", "phylum", "family", *LOWER_RANKS, "common_name", "license_name",
                "copyright_owner", "source_url", "md5", "file_name")
# relative_path: the file's path in the metadata ("" in Imageomics' catalog, which names no folder); found: how
# the file was found: "" at that path (or by name when no path is given), "elsewhere" by its name elsewhere,
# "ambiguous" when several files carry the name and none is at the path (path None: the row is not read).
CATALOG_COLUMNS = ("row", "eol_content_id", "eol_page_id", *TEXT_COLUMNS, "relative_path", "path", "found")


class MetadataError(errors.BuildError):
    """The download's metadata is unusable; the message is one line: where, what, and what to do."""


@dataclasses.dataclass
class Download:
    """A located, validated download.

    Attributes:
      root: the folder holding the metadata (inside the manual dir, or inside the extracted zip).
      layout: "course" or "imageomics".
      metadata_path: the file the rows came from (row numbers refer to its lines).
      table: one row per metadata row, columns CATALOG_COLUMNS; `path` is None when the file is missing.
      unnamed_files: image files under the root that no metadata row names (relative paths, sorted).
      same_name_files: files named like a row's file that are not read for it (relative paths, sorted): another
        file of that name is at the row's path, or several share the name and none is at the path.
      found_elsewhere: "metadata path -> path read" of each row whose file is not at its metadata path but is
        the one file of its name elsewhere.
      taxonomy_source: where class/order/genus/species came from: the download's own file or catalog, or the
        shipped annotation (tfds_rarespecies/labels.py) for a course download without one (with shipped labels).
      taxonomy: the label lists and tree of the build: the shipped one, or the download's own rows' paths
        (labels="from_metadata").
    """

    root: pathlib.Path
    layout: str
    metadata_path: pathlib.Path
    table: pd.DataFrame
    unnamed_files: list[str]
    same_name_files: list[str]
    found_elsewhere: list[str]
    taxonomy_source: str
    taxonomy: labels.Taxonomy


def find_roots(manual_dir: os.PathLike) -> list[tuple[pathlib.Path, str]]:
    """Every folder up to 3 levels under manual_dir holding either layout's metadata, with the layout's name
    (shallowest first): more than one is more than one download, which the builder refuses rather than pick."""
    manual_dir = pathlib.Path(manual_dir)
    roots = []
    for depth in range(4):
        pattern = "/".join(["*"] * depth)
        for metadata, layout in ((COURSE_METADATA, "course"), (IMAGEOMICS_METADATA, "imageomics")):
            for candidate in sorted(manual_dir.glob(f"{pattern}/{metadata}" if depth else metadata)):
                roots.append((candidate.parent if layout == "course" else candidate.parent.parent, layout))
    return roots


def read_download(root: os.PathLike, layout: str, label_source: str = "shipped") -> Download:
    """Reads and validates the metadata of a located download and finds each row's image file.

    label_source "shipped": every phylum and family must be one of the shipped taxonomy's, and ranks the
    download lacks are filled from it; "from_metadata": any names, the tree is the download's own rows."""
    root = pathlib.Path(root)
    shipped = label_source == "shipped"
    if layout == "course":
        metadata_path = root / COURSE_METADATA
        table = _course_table(_read_csv(metadata_path, COURSE_COLUMNS))
        taxonomy_path = next((root / name for name in TAXONOMY_FILES if (root / name).exists()), None)
        taxonomy_source = taxonomy_path.name if taxonomy_path else SHIPPED_TAXONOMY if shipped else NO_TAXONOMY
        if taxonomy_path:
            table = _join_taxonomy(table, taxonomy_path)
    else:
        metadata_path = root / IMAGEOMICS_METADATA
        table = _imageomics_table(_read_csv(metadata_path, IMAGEOMICS_COLUMNS))
        taxonomy_source = IMAGEOMICS_METADATA
        if (root / IMAGEOMICS_LICENSES).exists():
            table = _join_licenses(table, root / IMAGEOMICS_LICENSES)
    _validate(table, metadata_path)
    for rank in LOWER_RANKS:
        table[rank] = table[rank].str.lower()
    if shipped:
        _check_shipped_names(table, metadata_path)
        _place_in_tree(table)
    else:
        _check_family_phyla(table, metadata_path)
        _place_in_own_tree(table)
    files = _index_image_files(root)
    table["path"], table["found"], same_name = zip(*(
        _find_file(root, relative, files.get(name, [])) for relative, name in
        zip(table["relative_path"], table["file_name"])))
    named = set(table["file_name"])
    unnamed = sorted(path for name, paths in files.items() if name not in named for path in paths)
    elsewhere = table[table["found"] == "elsewhere"]
    moved = [f"{relative} -> {pathlib.Path(path).relative_to(root)}"
             for relative, path in zip(elsewhere["relative_path"], elsewhere["path"])]
    return Download(root, layout, metadata_path, table[list(CATALOG_COLUMNS)], unnamed,
                    sorted(path for paths in same_name for path in paths), moved, taxonomy_source,
                    labels.shipped() if shipped else labels.Taxonomy.of_rows(table))


def _find_file(root: pathlib.Path, relative: str, candidates: list[str]) -> tuple[pathlib.Path | None, str,
                                                                                     list[str]]:
    """(path, how found, same-named files not read) of one row: its metadata path when something is there (a
    file, a link, or a folder in the way, which the reader reports), else the one file of its name anywhere
    under root; several such files and none at the path is ambiguous: none is read, all are reported."""
    if relative and os.path.lexists(root / relative):
        return root / relative, "", [path for path in candidates if path != posixpath.normpath(relative)]
    if len(candidates) == 1:
        return root / candidates[0], "elsewhere" if relative else "", []
    if candidates:
        return None, "ambiguous", candidates
    return None, "", []


def read_exclusions(path: os.PathLike) -> dict[str, str]:
    """rare_species_id -> reason, from an exclusion CSV (the audit writes the same format)."""
    frame = _read_csv(pathlib.Path(path), EXCLUSION_COLUMNS)
    for column in EXCLUSION_COLUMNS:
        _require_values(frame, column, pathlib.Path(path))
    duplicated = frame["rare_species_id"].duplicated()
    if duplicated.any():
        row = int(frame.index[duplicated][0])
        raise MetadataError(f"{path}: row {row}: column rare_species_id: duplicate id "
                            f"{frame.at[row, 'rare_species_id']!r}; list each image once")
    return dict(zip(frame["rare_species_id"], frame["reason"]))


def _read_csv(path: pathlib.Path, required: tuple[str, ...]) -> pd.DataFrame:
    """All columns as stripped strings; index = the 1-based line number of the row in the file (header = 1)."""
    if not path.exists():
        raise MetadataError(f"{path}: file not found; check --manual_dir points at the download")
    if path.stat().st_size == 0:
        raise MetadataError(f"{path}: file is empty; download the metadata again")
    try:
        frame = pd.read_csv(io.StringIO(_utf8_text(path)), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise MetadataError(f"{path}: not a readable CSV ({exc}); download the metadata again") from None
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise MetadataError(f"{path}: row 1: missing column(s) {', '.join(missing)}; "
                            f"expected {', '.join(required)}")
    if frame.empty:
        raise MetadataError(f"{path}: has a header but no rows; download the metadata again")
    frame = frame.apply(lambda column: column.str.strip())
    frame.index = range(2, len(frame) + 2)
    return frame


def _utf8_text(path: pathlib.Path) -> str:
    """The file's text (a leading byte-order mark dropped); bytes that are not UTF-8 fail naming their row.

    pandas' own decoding error gives a byte offset into a read buffer, which no editor can go to; decoding the
    whole file (metadata files are a few MB) gives the offset in the file, hence the line.
    """
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise MetadataError(f"{path}: row {line}: byte {column} of the line (0x{data[exc.start]:02x}) is not "
                            "UTF-8; save the file as UTF-8 (e.g. from a spreadsheet: CSV UTF-8)") from None


def _course_table(frame: pd.DataFrame) -> pd.DataFrame:
    table = pd.DataFrame(index=frame.index)
    for column in ("rare_species_id", "eol_content_id", "eol_page_id"):
        table[column] = frame[column]
    for column in ("kingdom", "phylum", "family"):
        table[column] = frame[column].str.lower()
    table["relative_path"] = frame["file_path"].map(lambda p: p.replace("\\", "/"))
    table["file_name"] = table["relative_path"].map(posixpath.basename)
    return table


def _imageomics_table(frame: pd.DataFrame) -> pd.DataFrame:
    table = pd.DataFrame(index=frame.index)
    table["rare_species_id"] = frame["rarespecies_id"]
    table["eol_content_id"] = frame["eol_content_id"]
    table["eol_page_id"] = frame["eol_page_id"]
    for column in ("kingdom", "phylum", "family"):
        table[column] = frame[column].str.lower()
    table["class"] = frame["class"]
    table["order"] = frame["order"]
    table["genus"] = frame["genus"]
    table["species"] = frame["sciName"]
    table["common_name"] = frame["common"]
    table["file_name"] = frame["eol_content_id"] + "_" + frame["eol_page_id"] + "_eol-full-size-copy.jpg"
    table["relative_path"] = ""
    return table


def _join_taxonomy(table: pd.DataFrame, path: pathlib.Path) -> pd.DataFrame:
    taxonomy = _read_csv(path, TAXONOMY_COLUMNS)
    taxonomy["file_name"] = taxonomy["filepath"].map(lambda p: p.replace("\\", "/").rsplit("/", 1)[-1])
    taxonomy = taxonomy.drop_duplicates("file_name").set_index("file_name")
    joined = taxonomy.reindex(table["file_name"])
    table["class"] = joined["cls"].fillna("").to_numpy()
    table["order"] = joined["order"].fillna("").to_numpy()
    table["genus"] = joined["genus"].fillna("").to_numpy()
    table["species"] = joined["class"].fillna("").to_numpy()
    table["common_name"] = joined["common_name"].fillna("").to_numpy()
    return table


def _join_licenses(table: pd.DataFrame, path: pathlib.Path) -> pd.DataFrame:
    licenses = _read_csv(path, LICENSE_COLUMNS).drop_duplicates("eol_content_id").set_index("eol_content_id")
    joined = licenses.reindex(table["eol_content_id"])
    table["md5"] = joined["md5"].fillna("").str.lower().to_numpy()
    table["license_name"] = joined["license_name"].fillna("").to_numpy()
    table["copyright_owner"] = joined["copyright_owner"].fillna("").to_numpy()
    source = joined["eol_full_size_copy_url"] if "eol_full_size_copy_url" in joined else None
    table["source_url"] = source.fillna("").to_numpy() if source is not None else ""
    return table


def _validate(table: pd.DataFrame, path: pathlib.Path) -> None:
    """Fails on the first problem, naming file, row and column; fills absent optional text columns with ''."""
    for column in TEXT_COLUMNS:
        if column not in table:
            table[column] = ""
    for column in ("rare_species_id", "eol_content_id", "eol_page_id", "kingdom", "phylum", "family", "file_name"):
        _require_values(table, column, path)
    for column in ("eol_content_id", "eol_page_id"):
        numbers = pd.to_numeric(table[column], errors="coerce")
        bad = numbers.isna() | (numbers < 0) | (numbers != numbers.round())
        if bad.any():
            row = int(table.index[bad][0])
            raise MetadataError(f"{path}: row {row}: column {column}: {table.at[row, column]!r} is not a "
                                "non-negative integer; fix the row")
        table[column] = numbers.astype("int64")
    for column in ("rare_species_id", "file_name"):
        duplicated = table[column].duplicated()
        if duplicated.any():
            row = int(table.index[duplicated][0])
            first = int(table.index[table[column] == table.at[row, column]][0])
            raise MetadataError(f"{path}: row {row}: column {column}: duplicate {table.at[row, column]!r} "
                                f"(first at row {first}); each image must appear once")
    _check_relative_paths(table, path)
    table["row"] = table.index


def _check_relative_paths(table: pd.DataFrame, path: pathlib.Path) -> None:
    """A metadata path must stay inside the download: no absolute path, no `..`; the build reads nothing else."""
    relative = table["relative_path"]
    parts = relative.str.split("/")
    bad = relative.str.startswith("/") | relative.str.match(r"^[A-Za-z]:") | parts.map(lambda p: ".." in p)
    if bad.any():
        row = int(table.index[bad][0])
        raise MetadataError(f"{path}: row {row}: column file_path: {relative[row]!r} leads outside the download "
                            "folder; give the image's path relative to the folder holding the metadata")


def _check_shipped_names(table: pd.DataFrame, path: pathlib.Path) -> None:
    """Every kingdom, phylum and family one of the shipped taxonomy's, and each family under its phylum."""
    for column, known in (("kingdom", labels.KINGDOMS), ("phylum", labels.phyla()),
                          ("family", labels.families())):
        unknown = ~table[column].isin(known)
        if unknown.any():
            row = int(table.index[unknown][0])
            raise MetadataError(f"{path}: row {row}: column {column}: {table.at[row, column]!r} is not one of the "
                                f"{len(known)} known {column} names (tfds_rarespecies/rare_species/); "
                                "fix the row, exclude it, or for another collection build with the config "
                                "field labels=\"from_metadata\"")
    expected_phylum = table["family"].map(labels.phylum_of("family"))
    wrong = table["phylum"] != expected_phylum
    if wrong.any():
        row = int(table.index[wrong][0])
        raise MetadataError(f"{path}: row {row}: column phylum: family {table.at[row, 'family']!r} belongs to "
                            f"{expected_phylum[row]!r}, not {table.at[row, 'phylum']!r}; fix the row")


def _check_family_phyla(table: pd.DataFrame, path: pathlib.Path) -> None:
    """A download's own labels: each family under one phylum (the first row naming it decides), so the
    family -> phylum step of the tree is never ambiguous."""
    first = table.groupby("family", sort=False)["phylum"].transform("first")
    wrong = table["phylum"] != first
    if wrong.any():
        row = int(table.index[wrong][0])
        family = table.at[row, "family"]
        earlier = int(table.index[(table["family"] == family) & ~wrong][0])
        raise MetadataError(f"{path}: row {row}: column phylum: family {family!r} is under {first[row]!r} at row "
                            f"{earlier}, not {table.at[row, 'phylum']!r}; fix one of the rows")


def _place_in_own_tree(table: pd.DataFrame) -> None:
    """A download's own tree: a row is placed when it names every rank and each name sits under the parent
    the first placed row naming it gave; the lower ranks of any other row are emptied (unplaced, counted)."""
    placed = (table[list(LOWER_RANKS)] != "").all(axis=1)
    while True:
        rows = table[placed]
        agrees = pd.Series(True, index=rows.index)
        for parent, rank in zip(labels.RANKS, labels.RANKS[1:]):
            agrees &= rows[parent] == rows.groupby(rank, sort=False)[parent].transform("first")
        if agrees.all():
            break
        placed[agrees.index[~agrees]] = False
    table.loc[~placed, list(LOWER_RANKS)] = ""


def _place_in_tree(table: pd.DataFrame) -> None:
    """Fills empty ranks below family from the shipped taxonomy by EOL page id (one page per species) and
    empties every rank of a row that does not sit in the shipped tree (an unknown name, or ranks that disagree
    with the tree): such a row is unplaced, and the build report counts it."""
    shipped = labels.taxonomy().set_index("eol_page_id").reindex(table["eol_page_id"])
    for column in (*LOWER_RANKS, "common_name"):
        empty = (table[column] == "").to_numpy()
        table.loc[empty, column] = shipped[column].fillna("").to_numpy()[empty]
    tree = labels.taxonomy()[list(labels.RANKS)]
    placed = table[list(labels.RANKS)].merge(tree.drop_duplicates(), how="left", indicator=True)["_merge"]
    table.loc[(placed == "left_only").to_numpy(), list(LOWER_RANKS)] = ""


def unplaced(table: pd.DataFrame) -> pd.Series:
    """Rows without the ranks below family (see _place_in_tree)."""
    return table["species"] == ""


def _require_values(table: pd.DataFrame, column: str, path: pathlib.Path) -> None:
    empty = table[column] == ""
    if empty.any():
        raise MetadataError(f"{path}: row {int(table.index[empty][0])}: column {column}: empty value; fill it in "
                            "or remove the row")


def _index_image_files(root: pathlib.Path) -> dict[str, list[str]]:
    """base name -> relative paths (sorted, "/"-separated) of every image file under root, symlinks included,
    and of every folder named like an image: a row that names one is then skipped as not a file rather than
    reported missing, which would hide the folder in the way."""
    found = collections.defaultdict(list)
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        for name in sorted([*names, *subfolders]):
            if name.lower().endswith(IMAGE_SUFFIXES):
                found[name].append((pathlib.Path(folder) / name).relative_to(root).as_posix())
    return dict(found)
