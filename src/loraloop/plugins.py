"""Plugins: packages and modules that add dataset formats, evaluation metrics, app router
strategies and adapter-page panels, through pluggy hooks (https://pluggy.readthedocs.io).

    entry points "loraloop.plugins" ──┐
    settings.plugins (module paths) ──┴──▶ load() ──▶ pluggy PluginManager("loraloop")
        each hook implementation is called on its own: a failure is reported naming its
        plugin, and the plugin's other contributions and every other plugin still load
          ├── dataset_formats()        ──▶ datasets.formats.register_format
          ├── eval_metrics()           ──▶ ml.evaluation.register_metric
          ├── router_strategies()      ──▶ ml.router.register_strategy
          └── adapter_panels(adapter)  ──▶ Panel(title, html) on each adapter page view

A plugin is a module with functions named like the hooks of :class:`Specs`, each decorated
with :data:`hookimpl`. The registries live beside the code that uses them (``ml/`` knows
nothing of this module); this module fills them. Job children load the same modules
(:func:`child_modules`), so a plugin's metric scores an evaluation job too. Guide:
docs/plugins.md.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from typing import TYPE_CHECKING, Any

import jinja2
import pluggy
from markupsafe import Markup, escape

if TYPE_CHECKING:
    from loraloop.datasets.formats import DatasetFormat
    from loraloop.db.tables import Adapter
    from loraloop.ml.evaluation import Check, Scorer
    from loraloop.ml.router import Strategy

__all__ = [
    "ENTRY_POINTS",
    "PROJECT",
    "AdapterInfo",
    "Metric",
    "Panel",
    "Plugins",
    "RouterStrategy",
    "ShownPanel",
    "Specs",
    "child_modules",
    "hookimpl",
    "hookspec",
    "load",
    "panels_of",
    "render_template",
]

PROJECT = "loraloop"
ENTRY_POINTS = "loraloop.plugins"
"""The entry-point group an installed package names its plugin module in."""

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

log = logging.getLogger(__name__)

_MAX_TITLE = 200
_children: dict[str, None] = {}  # module paths loaded by this process, in order, for job children


# --- what plugins give -----------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """An evaluation metric: ``score(answer, expected)`` in [0, 1]; ``check(expected)`` says
    what is wrong with a case's expectation (default: a non-empty string or list of them)."""

    name: str
    score: Scorer
    check: Check | None = None


@dataclass(frozen=True)
class RouterStrategy:
    """An app router strategy: ``pick(text, members)`` names the member that answers, or
    returns None to leave the request to the app's meaning router and default."""

    name: str
    pick: Strategy


@dataclass(frozen=True)
class AdapterInfo:
    """What a panel may know of the adapter page it is shown on: only what the page shows."""

    id: int
    name: str
    base_model: str
    visibility: str
    licence: str
    description: str
    champion: int | None
    """The champion's version number, if any."""
    mine: bool
    """The viewer owns the adapter."""
    lang: str
    """The viewer's language (``ja`` or ``en``)."""

    @classmethod
    def of(
        cls, adapter: Adapter, base_model: str, aliases: Mapping[str, int], *, mine: bool, lang: str
    ) -> AdapterInfo:
        return cls(
            id=adapter.id,
            name=adapter.name,
            base_model=base_model,
            visibility=adapter.visibility,
            licence=adapter.licence,
            description=adapter.description or "",
            champion=aliases.get("champion"),
            mine=mine,
            lang=lang,
        )


@dataclass(frozen=True)
class Panel:
    """A panel for the adapter page. A plain ``str`` as ``html`` is escaped (shown as text);
    only ``Markup`` (from :func:`render_template`, or ``markupsafe``) is inserted as HTML."""

    title: str
    html: str


@dataclass(frozen=True)
class ShownPanel:
    """A panel as the page shows it: whose it is, its title, and HTML that is safe to insert."""

    plugin: str
    title: str
    html: Markup


class Specs:
    """The hooks a plugin may implement (each is optional)."""

    @hookspec
    def dataset_formats(self) -> Iterable[DatasetFormat]:  # type: ignore[empty-body]
        """Dataset formats this plugin reads (``loraloop.datasets.formats.DatasetFormat``)."""

    @hookspec
    def eval_metrics(self) -> Iterable[Metric]:  # type: ignore[empty-body]
        """Evaluation metrics this plugin scores with."""

    @hookspec
    def router_strategies(self) -> Iterable[RouterStrategy]:  # type: ignore[empty-body]
        """Named strategies an app router may use to pick a member."""

    @hookspec
    def adapter_panels(self, adapter: AdapterInfo) -> Iterable[Panel] | Panel | None:
        """Panels to show on the page of ``adapter`` (called on every view of it)."""


def render_template(package: str, name: str, /, **context: Any) -> Markup:
    """The plugin template ``templates/<name>`` of ``package``, rendered with autoescaping
    (the values in ``context`` are escaped unless they are ``Markup``)."""
    return Markup(_environment(package).get_template(name).render(**context))  # noqa: S704


@cache
def _environment(package: str) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


# --- loading -------------------------------------------------------------------------------


@dataclass
class Plugins:
    """The loaded plugins, what each contributed, and every problem met on the way."""

    manager: pluggy.PluginManager
    problems: list[str] = field(default_factory=list)
    contributed: dict[str, list[str]] = field(default_factory=dict)
    """Per kind (``dataset_formats``, ``eval_metrics``, ``router_strategies``), the names."""

    def names(self) -> list[str]:
        """The names of the loaded plugins (entry-point names and module paths)."""
        return [name for name, _ in self.manager.list_name_plugin()]

    def adapter_panels(self, adapter: AdapterInfo) -> list[ShownPanel]:
        """Every plugin's panels for ``adapter``; a plugin that fails is logged and left out."""
        shown: list[ShownPanel] = []
        for plugin, items in _each(self, "adapter_panels", {"adapter": adapter}):
            for item in items:
                panel = _shown(plugin, item)
                if panel is None:
                    self._problem(plugin, f"gave {item!r:.80}, not a Panel(title, html)")
                else:
                    shown.append(panel)
        return shown

    def close(self) -> None:
        """Withdraw what these plugins registered (tests load and unload them)."""
        from loraloop.datasets.formats import unregister_format
        from loraloop.ml.evaluation import unregister_metric
        from loraloop.ml.router import unregister_strategy

        drop: dict[str, Callable[[str], None]] = {
            "dataset_formats": unregister_format,
            "eval_metrics": unregister_metric,
            "router_strategies": unregister_strategy,
        }
        for kind, names in self.contributed.items():
            for name in names:
                drop[kind](name)
        self.contributed.clear()
        for name in self.names():
            _children.pop(name, None)

    def _problem(self, plugin: str, what: str, error: BaseException | None = None) -> None:
        message = f"plugin {plugin!r} {what}"
        if error is not None:
            message += f": {type(error).__name__}: {error}"
        self.problems.append(message)
        log.error("%s", message)


def load(modules: Sequence[str] = (), *, entry_points: bool = True) -> Plugins:
    """Load the installed plugins (``loraloop.plugins`` entry points) and ``modules``, and
    register what they add. Never raises for a plugin's fault: see ``Plugins.problems``."""
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(Specs)
    plugins = Plugins(manager)
    candidates: list[tuple[str, Callable[[], object]]] = []
    if entry_points:
        for point in importlib.metadata.entry_points(group=ENTRY_POINTS):
            candidates.append((point.name, point.load))
    for module in modules:
        candidates.append((module, partial(importlib.import_module, module)))
    for name, importer in candidates:
        _register(plugins, name, importer)
        if name in modules and manager.has_plugin(name):
            _children[name] = None
    if manager.get_plugins():
        _contribute(plugins)
    return plugins


def child_modules() -> list[str]:
    """The plugin modules this process loaded from settings, for a job's child to load."""
    return list(_children)


def panels_of(app: Any, adapter: AdapterInfo) -> list[ShownPanel]:
    """The panels for ``adapter`` from the plugins of ``app`` (a FastAPI app; none if it
    loaded none)."""
    plugins: Plugins | None = getattr(app.state, "plugins", None)
    return plugins.adapter_panels(adapter) if plugins is not None else []


def _register(plugins: Plugins, name: str, importer: Callable[[], object]) -> None:
    try:
        plugin = importer()
    except Exception as error:  # a plugin that cannot import must not stop the server
        plugins._problem(name, "could not be imported", error)
        return
    if plugins.manager.is_registered(plugin):
        return  # both an entry point and a setting
    try:
        plugins.manager.register(plugin, name=name)
    except Exception as error:  # pluggy refuses a hook whose arguments do not match its spec
        plugins._problem(name, "was refused", error)
        return
    for caller in plugins.manager.get_hookcallers(plugin) or ():
        if not caller.has_spec():
            plugins._problem(name, f"implements {caller.name!r}, which is not a loraloop hook")


def _contribute(plugins: Plugins) -> None:
    """Register each plugin's formats, metrics and strategies into their registries."""
    from loraloop.datasets.formats import DatasetFormat, register_format
    from loraloop.ml.evaluation import register_metric
    from loraloop.ml.router import register_strategy

    def add_format(item: object) -> str:
        if not isinstance(item, DatasetFormat):
            raise TypeError(f"{item!r:.80} is not a DatasetFormat")
        register_format(item)
        return item.name

    def add_metric(item: object) -> str:
        if not isinstance(item, Metric):
            raise TypeError(f"{item!r:.80} is not a Metric")
        register_metric(item.name, item.score, check=item.check)
        return item.name

    def add_strategy(item: object) -> str:
        if not isinstance(item, RouterStrategy):
            raise TypeError(f"{item!r:.80} is not a RouterStrategy")
        register_strategy(item.name, item.pick)
        return item.name

    adders = {
        "dataset_formats": add_format,
        "eval_metrics": add_metric,
        "router_strategies": add_strategy,
    }
    for kind, add in adders.items():
        for plugin, items in _each(plugins, kind, {}):
            for item in items:
                try:
                    plugins.contributed.setdefault(kind, []).append(add(item))
                except (TypeError, ValueError) as error:
                    plugins._problem(plugin, f"gave a bad {kind} entry", error)


def _each(
    plugins: Plugins, hook: str, kwargs: dict[str, Any]
) -> Iterable[tuple[str, list[object]]]:
    """(plugin name, items) of each implementation of ``hook``, called one at a time so one
    plugin's exception is its own problem (pluggy's own call would stop at the first)."""
    caller = getattr(plugins.manager.hook, hook)
    for impl in caller.get_hookimpls():  # in the order the plugins were registered
        try:
            result = impl.function(*[kwargs[name] for name in impl.argnames])
            # one item or None is allowed; a generator's errors surface here, not later
            items = [result] if isinstance(result, Panel) else list(result or ())
        except Exception as error:
            plugins._problem(impl.plugin_name, f"failed in {hook}", error)
            continue
        yield impl.plugin_name, items


def _shown(plugin: str, item: object) -> ShownPanel | None:
    """The panel with its HTML made safe, or None when it is not a usable ``Panel``."""
    if not isinstance(item, Panel) or not isinstance(item.html, str):
        return None
    title = item.title.strip() if isinstance(item.title, str) else ""
    if not title:
        return None
    html = item.html if isinstance(item.html, Markup) else escape(item.html)
    return ShownPanel(plugin, title[:_MAX_TITLE], html)
