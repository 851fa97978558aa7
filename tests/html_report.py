"""Reading the pipelines' HTML reports back in tests: headings, tables and the files they reference."""

from html.parser import HTMLParser
from pathlib import Path


class ReportParser(HTMLParser):
    """Section headings, tables (header and rows of cell text) and the files that images and links reference."""

    def __init__(self):
        super().__init__()
        self.headings, self.tables, self.images, self.links = [], [], [], []
        self.cell, self.row, self.in_heading = None, None, False

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

    def handle_endtag(self, tag):
        if tag == "h2":
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
        if self.in_heading:
            self.headings[-1] += data
        if self.cell is not None:
            self.cell += data


def parse_report(path: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(Path(path).read_text(encoding="utf-8"))
    for reference in parser.images + parser.links:
        assert (Path(path).parent / reference).exists(), f"{path} references {reference}, which is missing"
    return parser


def table_with(parsed: ReportParser, column: str) -> dict:
    return next(t for t in parsed.tables if column in t["header"])
