"""Report preview and export: the case documentation as the engine wrote it.

``report.get`` returns the case document and writes the PDF; the screen shows the
document's content as text and, when ``pdftoppm`` is installed, the PDF's pages as
images (rendered on a worker thread; the result reaches the widgets through
``Clock.schedule_once``), which the nurse pages through and zooms (the page scrolls when
it is larger than its box; "Page only" gives it the whole width). ``export.usb`` copies
the case to the USB stick and verifies it; its answer (or its refusal: no stick, several
sticks) is shown as it comes. A pseudonymised report says so where a name is left out.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

from kivy.properties import BooleanProperty, ListProperty, NumericProperty, StringProperty

from app.ui import present as P
from app.ui import words as W
from app.ui.screens import LnmScreen, load_kv
from app.ui.widgets import schedule


RENDER_DPI = 110  # sharp enough to read at 2x zoom on the 7" screen
ZOOMS = (1.0, 1.5, 2.0, 3.0)


def render_problem(exc: BaseException) -> str:
    """Why ``pdftoppm`` did not render the pages, in one sentence."""
    if isinstance(exc, subprocess.CalledProcessError):
        err = (exc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        return f"the page renderer failed (status {exc.returncode}" + (f": {err[0][:120]}" if err else "") + ")."
    if isinstance(exc, subprocess.TimeoutExpired):
        return f"the page renderer took longer than {exc.timeout:g} s."
    return f"the page renderer could not run ({exc})."


class ReportScreen(LnmScreen):
    """The case documentation: its content as text, the PDF's pages, the USB export."""

    summary = StringProperty("No report loaded.")
    pdf_path = StringProperty("")
    page_source = StringProperty("")
    page_text = StringProperty("")
    export_text = StringProperty("")
    busy = BooleanProperty(False)
    page = NumericProperty(0)
    pages = ListProperty([])
    zoom = NumericProperty(1.0)  # 1: the page's width fits its box
    page_only = BooleanProperty(False)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.case_id: str | None = None
        self._tmp = tempfile.mkdtemp(prefix="lnm-ui-report-")
        # The page images are only a preview: removed when the screen goes (or at exit).
        weakref.finalize(self, shutil.rmtree, self._tmp, True)

    def load(self, case_id: str | None) -> None:
        """Ask the engine for a case's documentation (None: the open or the last case)."""
        self.case_id = case_id
        self.busy = True
        self.summary = "Writing the report ..."
        self.pages = []
        self.page_source = ""
        self.page_text = ""
        self.export_text = ""
        args = {"case_id": case_id} if case_id else {}
        self.app.cmd("report.get", on_ok=self._got, on_error=self._failed, pdf=True, **args)

    def _got(self, r: dict[str, Any]) -> None:
        self.busy = False
        self.case_id = r.get("case_id") or self.case_id
        self.summary = P.document_summary(r.get("document") or {}, clean=W.plain)
        self.pdf_path = str(r.get("pdf_path") or "")
        if self.pdf_path:
            self.page_text = "rendering the PDF pages ..."
            threading.Thread(target=self._render_pdf, args=(self.pdf_path,), daemon=True,
                             name="lnm-ui-pdf").start()
        else:
            self.page_text = "No PDF was written."

    def _failed(self, reply: Any) -> bool:
        self.busy = False
        self.summary = "The report could not be made: " + W.refusal_words(reply.code, reply.message, reply.error)
        return True

    def _render_pdf(self, pdf: str) -> None:  # worker thread: no widget access here
        exe = shutil.which("pdftoppm")
        if exe is None:
            text = f"The report PDF was written ({Path(pdf).name}); install poppler-utils to see its pages here."
            schedule(lambda: self._pages_ready([], text))
            return
        out = Path(self._tmp) / (Path(pdf).parent.name or "report")
        try:
            subprocess.run([exe, "-png", "-r", str(RENDER_DPI), pdf, str(out)], check=True, timeout=60,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except (OSError, subprocess.SubprocessError) as exc:
            # the words are made here: ``exc`` no longer exists when the UI thread runs the callback
            text = (f"The report was written ({Path(pdf).name}) but its pages cannot be shown here: "
                    + render_problem(exc))
            schedule(lambda: self._pages_ready([], text))
            return
        pages = sorted(str(p) for p in out.parent.glob(out.name + "-*.png"))
        schedule(lambda: self._pages_ready(pages, f"report PDF: {Path(pdf).name}"))

    def _pages_ready(self, pages: list[str], text: str) -> None:
        self.pages = pages
        self.page = 0
        self._show_page(text)

    def _show_page(self, text: str | None = None) -> None:
        if self.pages:
            self.page_source = self.pages[self.page]
            self.page_text = f"page {self.page + 1} of {len(self.pages)}" + (f"   {text}" if text else "")
        else:
            self.page_source = ""
            if text:
                self.page_text = text

    def turn(self, delta: int) -> None:
        """The previous or next page."""
        if self.pages:
            self.page = max(0, min(len(self.pages) - 1, self.page + delta))
            self._show_page(f"report PDF: {Path(self.pdf_path).name}")
            self.ids.pagescroll.scroll_y = 1.0

    def change_zoom(self, up: bool) -> None:
        """The page larger or smaller (1: its width fits the box)."""
        i = min(range(len(ZOOMS)), key=lambda k: abs(ZOOMS[k] - self.zoom))
        self.zoom = ZOOMS[max(0, min(len(ZOOMS) - 1, i + (1 if up else -1)))]

    def toggle_page_only(self) -> None:
        """The page alone over the whole width, or beside the text."""
        self.page_only = not self.page_only
        self.ids.page_only.state = "down" if self.page_only else "normal"

    def export(self) -> None:
        """Copy the case to the USB stick."""
        self.export_text = "Exporting to the USB stick ..."
        args: dict[str, Any] = {}
        if self.case_id:
            args["case_id"] = self.case_id
        if self.app.options.usb_target:
            args["target"] = self.app.options.usb_target

        def ok(r: dict[str, Any]) -> None:
            files = r.get("files") or []
            safe = "safe to remove the stick." if r.get("safe_to_remove") else "do NOT remove the stick yet."
            self.export_text = (f"EXPORTED {len(files)} file(s), verified: {'yes' if r.get('verified') else 'NO'}; "
                                + safe)

        def refused(reply: Any) -> bool:
            self.export_text = "NOT EXPORTED: " + W.refusal_words(reply.code, reply.message, reply.error)
            return True

        self.app.cmd("export.usb", on_ok=ok, on_error=refused, **args)

    def new_case(self) -> None:
        """On to the next case."""
        self.app.go("case")


load_kv(__file__)
