"""Reading the pipelines' HTML reports back in tests: headings, tables, the files they reference, the 3D view."""

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np


class ReportParser(HTMLParser):
    """Section headings, tables (header and rows of cell text), the files that images, links and scripts
    reference, and the JSON data blocks (by element id)."""

    def __init__(self):
        super().__init__()
        self.headings, self.tables, self.images, self.links, self.scripts = [], [], [], [], []
        self.cell, self.row, self.in_heading = None, None, False
        self.data, self.data_id = {}, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "h2":
            self.in_heading = True
            self.headings.append("")
        elif tag == "table":
            self.tables.append({"header": [], "rows": []})
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = ""
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a" and not attrs["href"].startswith(("#", "http")):
            self.links.append(attrs["href"])
        elif tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])
        elif tag == "script" and attrs.get("type") == "application/json":
            self.data_id = attrs["id"]
            self.data[self.data_id] = ""

    def handle_endtag(self, tag):
        if tag == "script" and self.data_id:
            self.data[self.data_id] = json.loads(self.data[self.data_id])
            self.data_id = None
        elif tag == "h2":
            self.in_heading = False
        elif tag in ("td", "th"):
            self.row.append((tag, self.cell.strip()))
            self.cell = None
        elif tag == "tr":
            if all(kind == "th" for kind, _ in self.row):
                self.tables[-1]["header"] = [text for _, text in self.row]
            else:
                self.tables[-1]["rows"].append([text for _, text in self.row])

    def handle_data(self, data):
        if self.data_id:
            self.data[self.data_id] += data
        if self.in_heading:
            self.headings[-1] += data
        if self.cell is not None:
            self.cell += data


def parse_report(path: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(Path(path).read_text(encoding="utf-8"))
    for reference in parser.images + parser.links + parser.scripts:
        assert (Path(path).parent / reference).exists(), f"{path} references {reference}, which is missing"
    return parser


def table_with(parsed: ReportParser, column: str) -> dict:
    return next(t for t in parsed.tables if column in t["header"])


def trace_array(trace: dict, axis: str) -> np.ndarray:
    """A coordinate array of a plotly trace, as a list or plotly's typed array ({"dtype", "bdata"})."""
    value = trace.get(axis, [])
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).astype(float)
    return np.array([np.nan if v is None else v for v in value], float)


def view_markers(parsed: ReportParser, element: str = "view3d-data") -> dict:
    """The 3D view's marker traces by kind (``meta.kind``): their (N, 3) positions and hover names."""
    markers = {}
    for trace in parsed.data[element]["data"]:
        if trace.get("mode") == "markers":
            positions = np.stack([trace_array(trace, axis) for axis in "xyz"], axis=1)
            markers[trace["meta"]["kind"]] = {"xyz": positions, "names": trace.get("text", []), "trace": trace}
    return markers
