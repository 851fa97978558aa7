"""A static HTML report beside the outputs of every localization run (and of a reconstruction).

``OUTPUTS/report.html`` is one page that opens offline in any browser, without a server; its images are
files referenced by relative paths (``OUTPUTS/*.png``, and the gallery's JPEGs in ``OUTPUTS/report/``), and its
3D view (``view3d``) reads plotly's JavaScript from a file beside it. A localization
report holds the command and fingerprint (settings, their hash, the source commit), the recall
table per condition, a per-query table (inliers, errors, retrieved images), the figures, a 3D view of the map
and the query poses, a gallery
of the worst queries with their matches, and the time of each step.

    report.localization_report(scene, out)    # pipeline.run calls it: figures + report.html
    report.reconstruction_report(outputs, model, statistics, settings, pictures, timings)   # reconstruction.html
"""

import html
import json
import logging
import os
import pickle
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycolmap

from ..store.h5 import FeatureReader, MatchReader
from ..store.io import pairs_by_query, read_image, read_pairs
from ..store.provenance import config_hash, git_commit, replace_file
from . import figures, localize, view3d
from .poses import poses_from_model, read_poses
from .recall import THRESHOLDS

logger = logging.getLogger("fusion")

REPORT_NAME = "report.html"
RECONSTRUCTION_REPORT_NAME = "reconstruction.html"  # beside a localization's report.html in the same outputs
GALLERY_DIR = "report"  # figures made only for the report, under OUTPUTS
NUM_WORST = 6

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0 auto;
       max-width: 1280px; padding: 0 24px 48px; }
h1 { margin: 24px 0 4px; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 36px; }
nav a { margin-right: 14px; } .muted { color: #666; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #d4d4d4; padding: 3px 9px; vertical-align: top; text-align: left; }
th { background: #f2f2f2; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.failed td { background: #fdecec; }
code, pre { background: #f5f5f5; border-radius: 3px; } pre { padding: 8px; overflow-x: auto; white-space: pre-wrap; }
figure { margin: 16px 0 28px; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #444; margin-top: 4px; }
details summary { cursor: pointer; }
"""


class Html(str):
    """Text that is already HTML (table cells are escaped unless they are Html)."""


def escape(value) -> str:
    return value if isinstance(value, Html) else html.escape(str(value))


class StepTimer:
    """Wall-clock seconds per step: ``lap(name)`` closes the step that started at the previous lap."""

    def __init__(self):
        self.steps: Dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, name: str) -> float:
        now = time.perf_counter()
        self.steps[name] = self.steps.get(name, 0.0) + now - self.last
        self.last = now
        return self.steps[name]


def table(header: Optional[Sequence[str]], rows: Sequence[Sequence], numeric: Sequence[int] = (),
          row_classes: Optional[Sequence[str]] = None) -> Html:
    """An HTML table (``header`` None: rows only); cells of the ``numeric`` columns are right-aligned."""
    head = f"<thead><tr>{''.join(f'<th>{escape(h)}</th>' for h in header)}</tr></thead>" if header else ""
    body = []
    for i, row in enumerate(rows):
        cells = "".join(f'<td class="num">{escape(c)}</td>' if j in numeric else f"<td>{escape(c)}</td>"
                        for j, c in enumerate(row))
        css = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{css}>{cells}</tr>")
    return Html(f"<table>{head}<tbody>{''.join(body)}</tbody></table>")


def relative(path: Path, root: Path) -> str:
    """``path`` as a link from a page in ``root``."""
    return Path(os.path.relpath(Path(path).resolve(), Path(root).resolve())).as_posix()


def figure(path: Path, root: Path, caption: str) -> Html:
    """An image (by its path relative to the page in ``root``) with its caption."""
    source = relative(path, root)
    return Html(f'<figure><a href="{escape(source)}"><img src="{escape(source)}" alt="{escape(caption)}"></a>'
                f"<figcaption>{escape(caption)}</figcaption></figure>")


def write_page(path: Path, title: str, sections: Sequence[Tuple[str, str]], subtitle: str = "") -> Path:
    """One page (inline CSS; scripts only in the 3D view's section) with a link bar to its sections; written atomically."""
    anchors = [heading.lower().replace(" ", "-") for heading, _ in sections]
    nav = " ".join(f'<a href="#{a}">{escape(h)}</a>' for a, (h, _) in zip(anchors, sections))
    body = "".join(f'<section id="{a}"><h2>{escape(h)}</h2>{content}</section>'
                   for a, (h, content) in zip(anchors, sections))
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>"
            f'<p class="muted">{escape(subtitle)}</p><nav>{nav}</nav>{body}</body></html>\n')
    return replace_file(path, page)


def command_line() -> str:
    """The command that is running, as a user would type it."""
    return shlex.join(["python", *sys.argv])


def run_section(settings: dict, command: Optional[str] = None) -> Html:
    """The command, the fingerprint (hash of the settings, source commit) and the settings themselves."""
    rows = [("command", Html(f"<code>{escape(command or command_line())}</code>")),
            ("settings hash", config_hash(settings)), ("source commit", git_commit()),
            ("written", time.strftime("%Y-%m-%d %H:%M:%S"))]
    details = Html(f"<details><summary>all settings</summary><pre>"
                   f"{escape(json.dumps(settings, indent=1, sort_keys=True, default=str))}</pre></details>")
    return Html(table(None, rows) + details)


def timing_section(timings: Dict[str, float]) -> Html:
    total = sum(timings.values())
    rows = [(step, f"{seconds:.1f}", f"{100 * seconds / total:.0f}%" if total else "-")
            for step, seconds in timings.items()]
    rows.append((Html("<b>total</b>"), f"{total:.1f}", "100%"))
    return Html(table(("step", "seconds", "share"), rows, numeric=(1, 2))
                + '<p class="muted">Steps whose outputs already existed were re-used and take about 0 s.</p>')


def files_section(paths: Dict[str, Path], root: Path) -> Html:
    links = {label: relative(path, root) for label, path in paths.items()}
    return table(("what", "file"), [(label, Html(f'<a href="{escape(link)}">{escape(link)}</a>'))
                                    for label, link in links.items()])


# --- localization ---------------------------------------------------------------------------------


@dataclass
class QueryRow:
    name: str  # as the scene names it
    result_name: str  # as the results file names it
    condition: str
    localized: Optional[bool]  # None: no log to tell
    fallback: Optional[str]  # not localized: whose pose the results give instead (a reference image, "identity")
    num_inliers: Optional[int]
    num_2d3d: Optional[int]
    num_matches: Optional[int]
    position_error: Optional[float]  # metres; inf: no estimate; None: no ground truth
    rotation_error: Optional[float]
    retrieved: List[str]
    estimated_focal_length: Optional[float] = None  # PnP's, for a query whose focal length was a guess

    def severity(self) -> tuple:
        """Larger is worse: not localized first, then the error relative to the finest recall threshold
        (or, without ground truth, fewer inliers)."""
        if self.position_error is not None:
            metres, degrees = THRESHOLDS[0]
            return (self.localized is False, max(self.position_error / metres, self.rotation_error / degrees))
        return (self.localized is False, -(self.num_inliers or 0))


def hloc_log_path(results: Path) -> Path:
    """The pickle that hloc's localize_sfm writes beside its results."""
    return Path(f"{results}_logs.pkl")


def read_query_logs(results: Path, model: pycolmap.Reconstruction) -> Dict[str, dict]:
    """Per query: localized, num_inliers, num_2d3d, num_matches, db (names), from fusion's JSON log or
    hloc's pickle beside the results; empty when neither is there."""
    json_log = localize.log_path(results)
    if json_log.is_file():
        return json.loads(json_log.read_text())["queries"]
    hloc_log = hloc_log_path(results)
    if not hloc_log.is_file():
        return {}
    try:
        with open(hloc_log, "rb") as fd:
            entries = pickle.load(fd)["loc"]
    except Exception as error:  # hloc pickles pycolmap objects; an unreadable log only costs the inlier columns
        logger.warning(f"{hloc_log}: cannot read hloc's localization log ({error}); the report has no inliers")
        return {}
    logs = {}
    for name, entry in entries.items():
        fallback, entry = entry.get("fallback"), localize.hloc_query_log(entry)
        result = entry.get("PnP_ret")
        logs[name] = {"localized": bool(result and result.get("success", True)), "fallback": fallback,
                      "num_inliers": int(result["num_inliers"]) if result else 0,
                      "num_2d3d": len(entry.get("points3D_ids", [])), "num_matches": entry.get("num_matches"),
                      "db": [model.images[i].name for i in entry.get("db", []) if i in model.images]}
    return logs


def query_rows(scene, out: dict) -> List[QueryRow]:
    """One row per query of the scene, in the scene's order."""
    style = out.get("name_style", scene.name_style)
    logs = read_query_logs(out["results"], out["model"])
    retrieved = pairs_by_query(read_pairs(out["loc_pairs"]))
    conditions = {n: group for group, names in scene.query_groups.items() for n in names}
    errors = out.get("report", {}).get("per_query", {})
    rows = []
    for name in scene.query_names:
        log, result_name = logs.get(name, {}), localize.result_name(name, style)
        error = errors.get(result_name)
        rows.append(QueryRow(name, result_name, conditions.get(name, "queries"), log.get("localized"),
                             log.get("fallback"), log.get("num_inliers"), log.get("num_2d3d"), log.get("num_matches"),
                             error["position_m"] if error else None, error["rotation_deg"] if error else None,
                             retrieved.get(name, []), log.get("estimated_focal_length")))
    return rows


def number(value, digits: int) -> str:
    if value is None:
        return "-"
    if not np.isfinite(value):
        return "no estimate"
    return f"{value:.{digits}f}"


def retrieved_cell(names: List[str], used: Sequence[str] = ()) -> Html:
    if not names:
        return Html("-")
    items = "<br>".join(f"<b>{escape(n)}</b>" if n in used else escape(n) for n in names)
    return Html(f"<details><summary>{len(names)}: {escape(names[0])}{' ...' if len(names) > 1 else ''}</summary>"
                f"{items}</details>")


def recall_columns(report: dict) -> Tuple[List[str], List[str]]:
    """The recall keys of a recall report (``recall@0.25m,2deg``, ...) and their column labels (``0.25m, 2°``)."""
    keys = [k for k in report["all"] if k.startswith("recall@")]
    return keys, [k.removeprefix("recall@").replace(",", ", ").replace("deg", "°") for k in keys]


def recall_section(report: Optional[dict], benchmark: Optional[str] = None) -> Html:
    if not report and benchmark:
        return Html("<p>No ground truth for these queries, so no recall: submit the results file to "
                    f'<a href="{escape(benchmark)}">{escape(benchmark)}</a> for it.</p>')
    if not report:
        return Html("<p>No ground truth for these queries, so no recall. With ground-truth poses of the queries "
                    "(a COLMAP model or a <code>name qw qx qy qz tx ty tz</code> file in the map's frame), "
                    "<code>--gt</code> adds it.</p>")
    keys, labels = recall_columns(report)
    header = ["condition", "queries", *labels, "median position error (m)", "median rotation error (°)"]
    rows = [(group, stats["count"], *(f"{100 * stats[k]:.1f}%" for k in keys),
             number(stats["median_position_error_m"], 4), number(stats["median_rotation_error_deg"], 3))
            for group, stats in report.items() if group != "per_query"]
    return Html(table(header, rows, numeric=range(1, len(header)))
                + '<p class="muted">Share of queries within each (position, rotation) threshold; a query '
                  "without an estimate counts as a miss.</p>")


def per_query_section(rows: List[QueryRow], logs_known: bool) -> Html:
    ordered = sorted(rows, key=QueryRow.severity, reverse=True)
    header = ["query", "condition", "localized", "PnP inliers", "2D-3D matches", "matches",
              "position error (m)", "rotation error (°)", "retrieved images"]
    cells = [(r.name, r.condition, localized_cell(r),
              number(r.num_inliers, 0), number(r.num_2d3d, 0), number(r.num_matches, 0),
              number(r.position_error, 4), number(r.rotation_error, 3), retrieved_cell(r.retrieved))
             for r in ordered]
    note = ("Worst first. PnP inliers: 2D-3D matches consistent with the estimated pose (RANSAC); "
            "not localized: PnP found no pose (or the query had no retrieved images or no features), and the results "
            "give a fallback pose instead: the best retrieved reference image's, or the identity without one.")
    if not logs_known:
        note += " No localization log was found beside the results, so inlier counts are missing."
    return Html(table(header, cells, numeric=(3, 4, 5, 6, 7),
                      row_classes=["failed" if r.localized is False else "" for r in ordered])
                + f'<p class="muted">{escape(note)}</p>')


def localized_cell(row: QueryRow) -> str:
    if row.localized is None:
        return "-"
    if row.localized:
        return "yes"
    return f"no, fallback: {row.fallback}" if row.fallback else "no"


def stability_section(scene, first: dict, second: dict, second_rows: List[QueryRow], root: Path) -> Html:
    """The plain first pass against this run (features with the stability head learned from its map);
    ``second_rows``: this run's ``query_rows``."""
    link = escape(relative(Path(first["report_html"]), root))
    intro = (f"The stability head ({escape(relative(second['stability_checkpoint'], root))}) was learned from the "
             f"tracks of the map of a first pass with features made without it; that pass has its own report: "
             f'<a href="{link}">{link}</a>. Figures below read: first pass → this run.')
    recall = ""
    if first.get("report") and second.get("report"):
        keys, labels = recall_columns(second["report"])
        header = ["condition", *labels, "median position error (m)"]
        rows = [(group, *(f"{100 * first['report'][group][k]:.1f}% → {100 * stats[k]:.1f}%" for k in keys),
                 f"{number(first['report'][group]['median_position_error_m'], 4)} → "
                 f"{number(stats['median_position_error_m'], 4)}")
                for group, stats in second["report"].items() if group != "per_query" and group in first["report"]]
        recall = table(header, rows, numeric=range(1, len(header)))
    before = {r.name: r for r in query_rows(scene, first)}
    rows = [(r.name, r.condition, f"{number(before[r.name].num_inliers, 0)} → {number(r.num_inliers, 0)}",
             f"{number(before[r.name].position_error, 4)} → {number(r.position_error, 4)}",
             f"{number(before[r.name].rotation_error, 3)} → {number(r.rotation_error, 3)}")
            for r in second_rows]
    per_query = table(["query", "condition", "PnP inliers", "position error (m)", "rotation error (°)"], rows,
                      numeric=(2, 3, 4))
    return Html(f"<p>{intro}</p>{recall}{per_query}")


def gallery_figure(scene, out: dict, row: QueryRow, pose: pycolmap.Rigid3d, path: Path,
                   max_error: float) -> Tuple[Path, str]:
    """The query next to the retrieved image through which most 2D-3D matches agree with its estimated pose
    (and the focal length PnP estimated, for a query without one), their matches with a 3D point coloured by
    that agreement."""
    model = out["model"]
    camera = localize.estimated_camera(dict(scene.queries)[row.name], row.estimated_focal_length)
    features, matches = FeatureReader(out["features"]), MatchReader(out["loc_matches"])
    try:
        if row.name not in features.fd:
            return None, "no features for this query"
        query_keypoints = features.keypoints(row.name)
        best = None
        for db_name in row.retrieved:
            image = model.find_image_with_name(db_name)
            try:
                pairs, _ = matches.matches(row.name, db_name)
            except KeyError:
                continue
            if image is None or not len(pairs):
                continue
            point_ids = np.array([p.point3D_id if p.has_point3D() else -1 for p in image.points2D])[pairs[:, 1]]
            pairs, point_ids = pairs[point_ids != -1], point_ids[point_ids != -1]
            xyz = np.array([model.points3D[i].xyz for i in point_ids]).reshape(-1, 3)
            errors = np.linalg.norm(figures.reproject(xyz, camera, pose) - query_keypoints[pairs[:, 0]], axis=1)
            inliers = np.nan_to_num(errors, nan=np.inf) <= max_error
            if best is None or inliers.sum() > best[2].sum():
                best = (db_name, pairs, inliers)
        if best is None:
            return None, "no matches with the retrieved images"
        db_name, pairs, inliers = best
        db_keypoints = features.keypoints(db_name)
    finally:
        features.close()
        matches.close()
    images = [read_image(scene.image_path(n)) for n in (row.name, db_name)]
    title = f"{row.name} (left) - {db_name}: {int(inliers.sum())} of {len(inliers)} matches with a 3D point agree"
    figures.plot_matches(*images, query_keypoints[pairs[:, 0]], db_keypoints[pairs[:, 1]], inliers, path, title,
                         labels=(f"reprojects within {max_error:g} px with the estimated pose", "outlier"))
    return path, f"best reference image {db_name}: {int(inliers.sum())} of {len(inliers)} 2D-3D matches agree"


def gallery_caption(rank: int, row: QueryRow, detail: str) -> str:
    parts = [f"{rank}. {row.name} ({row.condition})"]
    if row.position_error is not None:
        parts.append(f"error {number(row.position_error, 4)} m, {number(row.rotation_error, 3)}°")
    if row.localized is not None:
        parts.append(f"{'localized' if row.localized else 'NOT localized'}, {number(row.num_inliers, 0)} PnP inliers")
    return "; ".join(parts + [detail])


def report_folder(out: dict) -> Path:
    """Where a run's report.html and figures go: ``out['report_dir']``, by default beside the results."""
    folder = Path(out.get("report_dir") or Path(out["results"]).parent)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def localization_figures(scene, out: dict, num_worst: int = NUM_WORST) -> None:
    """The top-down map (``topdown.png``) and the worst queries' matches (``report/``) in the report's
    folder, added to ``out['figures']`` and ``out['gallery']``."""
    outputs = report_folder(out)
    rows = query_rows(scene, out)
    estimates = read_poses(out["results"])
    names = {r.name: r.result_name for r in rows}
    truth = {names[n]: p for n, p in (scene.ground_truth or {}).items() if n in names}
    model = out["model"]
    points = np.array([p.xyz for p in model.points3D.values()]).reshape(-1, 3)
    out.setdefault("figures", {})["top-down map"] = figures.plot_topdown(
        poses_from_model(scene.reference), outputs / "topdown.png", truth, estimates, points,
        {r.result_name: r.condition for r in rows}, [r.result_name for r in rows if r.localized is False],
        unit=scene.units)
    gallery_dir = outputs / GALLERY_DIR
    gallery_dir.mkdir(exist_ok=True)
    max_error = out.get("settings", {}).get("ransac_max_error", 12.0)
    out["gallery"] = []
    worst = sorted((r for r in rows if r.result_name in estimates), key=QueryRow.severity, reverse=True)
    for rank, row in enumerate(worst[:num_worst], 1):
        path, detail = gallery_figure(scene, out, row, estimates[row.result_name], gallery_dir / f"worst-{rank}.jpg",
                                      max_error)
        out["gallery"].append((path, gallery_caption(rank, row, detail)))


def localization_view(scene, out: dict, rows: List[QueryRow], outputs: Path) -> Html:
    """The 3D view of the map (``out['model']``), the estimated poses and the ground truth of the queries."""
    names = {r.name: r.result_name for r in rows}
    truth = {names[n]: p for n, p in (scene.ground_truth or {}).items() if n in names}
    cameras = {names[n]: camera for n, camera in scene.queries if n in names}
    estimates = read_poses(out["results"])
    figure_3d = view3d.view_figure(out["model"], truth, estimates, {r.result_name: r.condition for r in rows},
                                   [r.result_name for r in rows if r.localized is False], cameras)
    return Html(view3d.view_section(figure_3d, outputs))


def write_localization_report(scene, out: dict) -> Path:
    """``report.html`` from ``out`` (pipeline.run's result with its figures, gallery and timings); with
    ``out['map']`` (the plain first pass of ``--learn-stability``), a section comparing the two passes."""
    outputs = report_folder(out)
    rows = query_rows(scene, out)
    logs_known = any(r.localized is not None for r in rows)
    localized = sum(bool(r.localized) for r in rows)
    gallery = [figure(p, outputs, caption) if p else Html(f"<p>{escape(caption)}</p>") for p, caption in
               out.get("gallery", [])]
    files = {"results (name qw qx qy qz tx ty tz per query)": out["results"], "query pairs": out["loc_pairs"],
             "features": out["features"], "query matches": out["loc_matches"], "triangulated model": out["sfm"]}
    for log in (localize.log_path(out["results"]), hloc_log_path(out["results"])):
        if log.is_file():
            files["localization log"] = log
    if out.get("report_path"):
        files["recall (JSON)"] = out["report_path"]
    sections = [
        ("Run", run_section(out.get("settings", {}))),
        ("Recall", recall_section(out.get("report"), scene.benchmark)),
        *([("Learned stability", stability_section(scene, out["map"], out, rows, outputs))] if out.get("map") else []),
        ("Figures", Html("".join(figure(p, outputs, caption) for caption, p in out.get("figures", {}).items()))),
        ("3D view", localization_view(scene, out, rows, outputs)),
        ("Worst queries", Html("".join(gallery) or "<p>No query has an estimate.</p>")),
        ("Queries", per_query_section(rows, logs_known)),
        ("Time per step", timing_section(out.get("timings", {}))),
        ("Files", files_section(files, outputs)),
    ]
    subtitle = (f"{scene.name}: {len(rows)} queries against {len(scene.db_names)} reference images"
                + (f", {localized} localized" if logs_known else ""))
    return write_page(outputs / REPORT_NAME, f"Localization report: {Path(out['results']).stem}", sections, subtitle)


def localization_report(scene, out: dict, num_worst: int = NUM_WORST) -> Path:
    """Figures and ``report.html`` (in the run's report folder) of a finished ``pipeline.run``; the figures' time is added to
    ``out['timings']``. Call ``write_localization_report`` again after adding figures to ``out['figures']``."""
    start = time.perf_counter()
    localization_figures(scene, out, num_worst)
    out.setdefault("timings", {})["report figures"] = time.perf_counter() - start
    path = write_localization_report(scene, out)
    logger.info(f"Report: {path}")
    return path


# --- reconstruction -------------------------------------------------------------------------------


def reconstruction_report(outputs: Path, model: pycolmap.Reconstruction, statistics: dict, settings: dict,
                          pictures: Dict[str, Path], timings: Optional[Dict[str, float]] = None,
                          skipped: Sequence[str] = ()) -> Path:
    """``OUTPUTS/reconstruction.html`` of a reconstruction: command and fingerprint, the model's statistics, one
    row per registered image, images that could not be used, the figures and the time per step.

    ``pictures`` maps captions to PNG paths inside ``outputs``.
    """
    outputs = Path(outputs)
    images = sorted(model.images.values(), key=lambda image: image.name)
    image_rows = [(image.name, image.camera_id, "yes" if image.has_pose else "no", image.num_points3D)
                  for image in images]
    sections = [
        ("Run", run_section(settings)),
        ("Model", table(("statistic", "value"), [(k, f"{v:.3f}" if isinstance(v, float) else v)
                                                  for k, v in statistics.items()], numeric=(1,))),
        ("Figures", Html("".join(figure(p, outputs, caption) for caption, p in pictures.items()))),
        ("3D view", Html(view3d.view_section(view3d.view_figure(model), outputs))),
        ("Images", table(("image", "camera", "registered", "3D points seen"), image_rows, numeric=(3,))),
    ]
    if skipped:
        sections.append(("Skipped images", table(("image and reason",), [(s,) for s in skipped])))
    sections.append(("Time per step", timing_section(timings or {})))
    subtitle = f"{model.num_reg_images()} registered images, {model.num_points3D()} 3D points"
    path = write_page(outputs / RECONSTRUCTION_REPORT_NAME, f"Reconstruction report: {outputs.name}", sections, subtitle)
    logger.info(f"Report: {path}")
    return path
