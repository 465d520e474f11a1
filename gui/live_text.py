"""Text on the page that edits change: one Panel ``HTML`` model per render, updated by one string.

Setting a Panel pane's ``object`` re-sends all of its model's properties, stylesheets (Bokeh
models) included, and a changed model reference makes Bokeh walk the whole document
(``Document.models.recompute``: 0.5 s per pane on the served app, for a rename that changes
three texts). Here the model's ``text`` (a plain string property) is set directly: that sends
the string.

The model is Panel's ``HTML`` (:mod:`panel.models.markup`), not Bokeh's ``Div``: in the browser
a ``Div`` whose text changes re-renders and recomputes the layout of the whole page (every plot
measured again, 150-500 ms per change on the Clusters tab of a 1M-pixel result), while Panel's
``HTML`` view only replaces its inner HTML.
"""

from __future__ import annotations

from html import escape
from typing import Any, cast

import panel as pn
from panel.models.markup import HTML

__all__ = ["LiveText"]


class LiveText:
    """HTML text shown in any number of renders; :attr:`object` sets it in all of them.

    Parameters
    ----------
    text
        Initial HTML.
    css_classes
        Classes of the element (for page styles and browser tests).
    """

    def __init__(self, text: str = "", *, css_classes: list[str] | None = None) -> None:
        self._text = text
        self._css = list(css_classes or [])
        self._models: list[HTML] = []

    @property
    def object(self) -> str:
        """The HTML shown."""
        return self._text

    @object.setter
    def object(self, text: str) -> None:
        if text == self._text:
            return
        self._text = text
        for model in self._models:
            model.text = escape(text)  # as Panel's HTML pane sends it (the page decodes it)

    def panel(self, **kwargs: Any) -> pn.pane.Bokeh:
        """A new pane showing the text (one model per render: a model has one document)."""
        model = cast(Any, HTML)(  # Panel's model: its properties are not in its type stubs
            text=escape(self._text),
            css_classes=self._css,
            sizing_mode="stretch_width",
            disable_math=True,
        )
        self._models.append(model)
        return pn.pane.Bokeh(model, sizing_mode="stretch_width", **kwargs)

    def __panel__(self) -> pn.pane.Bokeh:
        return self.panel()
