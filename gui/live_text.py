"""Text on the page that edits change: a Bokeh ``Div`` per render, updated by one string.

Setting a Panel pane's ``object`` re-sends all of its model's properties, stylesheets (Bokeh
models) included, and a changed model reference makes Bokeh walk the whole document
(``Document.models.recompute``: 0.5 s per pane on the served app, for a rename that changes
three texts). A ``Div``'s ``text`` is a plain string property: changing it sends the string.
"""

from __future__ import annotations

from typing import Any

import panel as pn
from bokeh.models.widgets import Div

__all__ = ["LiveText"]


class LiveText:
    """HTML text shown in any number of renders; :attr:`object` sets it in all of them.

    Parameters
    ----------
    text
        Initial HTML.
    css_classes
        Classes of the ``Div`` (for page styles and browser tests).
    """

    def __init__(self, text: str = "", *, css_classes: list[str] | None = None) -> None:
        self._text = text
        self._css = list(css_classes or [])
        self._divs: list[Div] = []

    @property
    def object(self) -> str:
        """The HTML shown."""
        return self._text

    @object.setter
    def object(self, text: str) -> None:
        self._text = text
        for div in self._divs:
            if div.text != text:
                div.text = text

    def panel(self, **kwargs: Any) -> pn.pane.Bokeh:
        """A new pane showing the text (one ``Div`` per render: a model has one document)."""
        div = Div(text=self._text, css_classes=self._css, sizing_mode="stretch_width")
        self._divs.append(div)
        return pn.pane.Bokeh(div, sizing_mode="stretch_width", **kwargs)

    def __panel__(self) -> pn.pane.Bokeh:
        return self.panel()
