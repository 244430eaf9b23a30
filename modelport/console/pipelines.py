"""The pipelines pages: the pipelines the caller may call, and one pipeline drawn as its graph (laid out here,
as an inline SVG: the request's fields, then the steps in columns by how deep they depend on each other, then
the outputs, an edge for each reference), with its steps, its composed API and links to try it.

Who sees what follows the API (`gateway/pipelines_api.py`): the pipelines whose owners or `Api` manifests let
the caller in, through `Pipelines.listing` and `Pipelines.info`; any other is the same 404 page as one that
does not exist. A step's module is linked only where the caller may see that module's page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from modelport.console.web import Console, Page
from modelport.control.access import may_call
from modelport.core.errors import ModelportError, PipelineNotFound
from modelport.core.manifests import PipelineManifest, parse_reference
from modelport.core.records import PipelineInfo, PipelineStepInfo
from modelport.sdk.spec import ApiSpec

__all__ = ["Graph", "GraphEdge", "GraphNode", "layout", "routes"]

NodeKind = Literal["inputs", "parameters", "step", "output"]

_STEP_WIDTH, _STEP_HEIGHT = 210.0, 52.0
_FIELD_WIDTH, _FIELD_HEIGHT = 160.0, 32.0
_COLUMN_GAP, _ROW_GAP, _MARGIN = 64.0, 16.0, 12.0
_WAYPOINT = 8.0
"""The room an edge passing through a column takes in it."""
_STEP_CHARS, _FIELD_CHARS = 26, 19
"""How many characters of a name fit in a box; the rest is cut (the box's tooltip holds it whole)."""


@dataclass(frozen=True)
class GraphNode:
    """One box of the graph: a request field, a step or an output, where it is drawn and what it says."""

    key: str
    kind: NodeKind
    label: str
    detail: str
    title: str
    problem: bool = False
    href: str | None = None
    x: float = 0.0
    y: float = 0.0
    width: float = 0.0
    height: float = 0.0


@dataclass(frozen=True)
class GraphEdge:
    """One arrow: values flowing from `source` to `target` (node keys); `title` names the fields they fill."""

    source: str
    target: str
    path: str
    title: str


@dataclass(frozen=True)
class Graph:
    """A pipeline's graph as drawn: its size, its boxes and its arrows."""

    width: float
    height: float
    nodes: list[GraphNode]
    edges: list[GraphEdge]

    def count(self, kind: NodeKind) -> int:
        return sum(1 for node in self.nodes if node.kind == kind)


def layout(manifest: PipelineManifest, steps: list[PipelineStepInfo], module_href: dict[str, str]) -> Graph:
    """The graph of `manifest`: the request's fields in the first column, each step in the column of its
    depth (one past the deepest step it needs), the outputs last. An edge that spans columns passes each
    column between through a waypoint of its own, which takes its place among the boxes; boxes and waypoints
    are ordered and placed by where their sources are, to keep edges short and from crossing. `steps` says
    what each step would run (or why it cannot); `module_href` links the modules the caller may see."""
    boxes, flows = _boxes(manifest, steps, module_href)
    slots = _columns(manifest, boxes)
    column = {key: index for index, keys in enumerate(slots) for key in keys}
    before: dict[str, list[str]] = {key: [] for key in boxes}
    chains: dict[tuple[str, str], list[str]] = {}
    for source, target in flows:
        chain = [source]
        for index in range(column[source] + 1, column[target]):
            waypoint = f"{source}>{target}@{index}"
            slots[index].append(waypoint)
            column[waypoint], before[waypoint] = index, [chain[-1]]
            chain.append(waypoint)
        before[target].append(chain[-1])
        chains[(source, target)] = [*chain, target]
    centre = _arrange(slots, before, boxes)
    widths = [max((_size(boxes[k])[0] for k in keys if k in boxes), default=_FIELD_WIDTH) for keys in slots]
    lefts = [_MARGIN + sum(widths[:index]) + _COLUMN_GAP * index for index in range(len(slots))]
    nodes = {
        key: _node(boxes[key], lefts[column[key]], widths[column[key]], centre[key])
        for keys in slots
        for key in keys
        if key in boxes
    }
    edges = [
        GraphEdge(*edge, _route(chain, nodes, centre, lefts, widths, column), "; ".join(flows[edge]))
        for edge, chain in chains.items()
    ]
    bottom = max([n.y + n.height for n in nodes.values()] + [y + _WAYPOINT / 2 for y in centre.values()])
    width = lefts[-1] + widths[-1] if slots else 0.0
    return Graph(width + _MARGIN, bottom + _MARGIN, list(nodes.values()), edges)


def _boxes(
    manifest: PipelineManifest, steps: list[PipelineStepInfo], module_href: dict[str, str]
) -> tuple[dict[str, GraphNode], dict[tuple[str, str], list[str]]]:
    """Every box by key, and every edge (source, target) with the fields that flow along it."""
    boxes: dict[str, GraphNode] = {}
    flows: dict[tuple[str, str], list[str]] = {}

    def source_of(value: str) -> str | None:
        reference = parse_reference(value)
        if reference is None:
            return None
        if reference["step"] is not None:
            return f"step:{reference['step']}"
        group: NodeKind = "inputs" if reference["group"] == "inputs" else "parameters"
        key = f"{group}:{reference['name']}"
        if key not in boxes:
            name = reference["name"]
            boxes[key] = GraphNode(
                key,
                group,
                _clip(name, _FIELD_CHARS),
                group,
                f"$.{group}.{name}",
            )
        return key

    def flow(value: Any, target: str, into: str) -> None:
        source = source_of(value) if isinstance(value, str) else None
        if source is not None:
            flows.setdefault((source, target), []).append(f"{value} → {into}")

    known = {info.name: info for info in steps}
    for step in manifest.spec.steps:
        boxes[f"step:{step.name}"] = _step_box(step.name, step.module, known.get(step.name), module_href)
    for step in manifest.spec.steps:
        for group, values in (("inputs", step.inputs), ("parameters", step.parameters)):
            for name, value in values.items():
                flow(value, f"step:{step.name}", f"{step.name}.{group}.{name}")
    for name, value in manifest.spec.outputs.items():
        boxes[f"output:{name}"] = GraphNode(
            f"output:{name}", "output", _clip(name, _FIELD_CHARS), "output", name
        )
        flow(value, f"output:{name}", name)
    return boxes, flows


def _step_box(
    name: str, module: str, info: PipelineStepInfo | None, module_href: dict[str, str]
) -> GraphNode:
    if info is not None and info.problem:
        detail, title, problem = info.problem, f"{name}: {module}: {info.problem}", True
    else:
        version = (info.serving or info.version) if info is not None else None
        detail = f"{module} · {version}" if version else module
        title, problem = f"{name}: {detail}", False
    return GraphNode(
        f"step:{name}",
        "step",
        _clip(name, _STEP_CHARS),
        _clip(detail, _STEP_CHARS + 4),
        title,
        problem=problem,
        href=module_href.get(module),
    )


def _columns(manifest: PipelineManifest, boxes: dict[str, GraphNode]) -> list[list[str]]:
    """The keys of each column, left to right, empty columns left out."""
    depth: dict[str, int] = {}
    for step in manifest.spec.order():
        depth[step.name] = 1 + max((depth[need] for need in step.needs), default=-1)
    last = max(depth.values(), default=-1) + 1
    columns: list[list[str]] = [[] for _ in range(last + 2)]
    for key, box in boxes.items():
        if box.kind == "step":
            columns[1 + depth[key.removeprefix("step:")]].append(key)
        elif box.kind == "output":
            columns[last + 1].append(key)
        else:
            columns[0].append(key)
    return [column for column in columns if column]


def _arrange(
    slots: list[list[str]], before: dict[str, list[str]], boxes: dict[str, GraphNode]
) -> dict[str, float]:
    """The height of the centre of every box and waypoint. Column by column, left to right: sorted by the mean
    height of their sources (the manifest's order where that ties, those without sources last), each as
    level with its sources as the ones above it leave room for."""
    centre: dict[str, float] = {}
    for keys in slots:
        wanted = {key: (_mean([centre[k] for k in before[key]]), index) for index, key in enumerate(keys)}
        keys.sort(key=wanted.__getitem__)
        cursor = 0.0
        for key in keys:
            height = _size(boxes[key])[1] if key in boxes else _WAYPOINT
            level = wanted[key][0]
            top = cursor if level == float("inf") else max(cursor, level - height / 2)
            centre[key] = top + height / 2
            cursor = top + height + _ROW_GAP
    tops = [centre[key] - (_size(boxes[key])[1] if key in boxes else _WAYPOINT) / 2 for key in centre]
    shift = _MARGIN - min(tops, default=0.0)
    return {key: value + shift for key, value in centre.items()}


def _node(box: GraphNode, left: float, width: float, centre: float) -> GraphNode:
    """`box` drawn in the column that starts at `left` and is `width` wide, its centre at height `centre`."""
    box_width, box_height = _size(box)
    return replace(
        box, x=left + (width - box_width) / 2, y=centre - box_height / 2, width=box_width, height=box_height
    )


def _route(
    chain: list[str],
    nodes: dict[str, GraphNode],
    centre: dict[str, float],
    lefts: list[float],
    widths: list[float],
    column: dict[str, int],
) -> str:
    """The SVG path of an edge: from the right of its source, straight through each waypoint's column, to the
    left of its target, bending between columns."""
    first, last = nodes[chain[0]], nodes[chain[-1]]
    x, y = first.x + first.width, first.y + first.height / 2
    path = [f"M{x:.1f},{y:.1f}"]
    for waypoint in chain[1:-1]:
        index = column[waypoint]
        path.append(_bend(x, y, lefts[index], centre[waypoint]))
        x, y = lefts[index] + widths[index], centre[waypoint]
        path.append(f"L{x:.1f},{y:.1f}")
    path.append(_bend(x, y, last.x, last.y + last.height / 2))
    return " ".join(path)


def _bend(x1: float, y1: float, x2: float, y2: float) -> str:
    bend = max(16.0, (x2 - x1) / 2)
    return f"C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"


def _size(box: GraphNode) -> tuple[float, float]:
    return (_STEP_WIDTH, _STEP_HEIGHT) if box.kind == "step" else (_FIELD_WIDTH, _FIELD_HEIGHT)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("inf")


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def routes(console: Console) -> list[BaseRoute]:
    services = console.services

    def pipelines_page(request: Request) -> Response:
        page = console.page(request)
        listing = services.pipelines.listing(page.principal)
        return console.render(page, "pipelines.html", pipelines=listing.pipelines)

    def pipeline_page(request: Request) -> Response:
        page = console.page(request)
        info = services.pipelines.info(page.principal, request.path_params["pipeline"])
        policy = services.policies.pipeline(info.name)
        if policy is None or policy.manifest is None:  # removed meanwhile
            raise PipelineNotFound(f"no pipeline named {info.name!r}")
        hrefs = _module_hrefs(console, page, policy.manifest)
        return console.render(
            page,
            "pipeline.html",
            info=info,
            graph=layout(policy.manifest, info.steps, hrefs),
            module_href=hrefs,
            spec=_spec(console, info),
            manifest=json.dumps(info.manifest, indent=2, ensure_ascii=False),
        )

    return [
        Route("/pipelines", pipelines_page, methods=["GET"], name="pipelines"),
        Route("/pipelines/{pipeline}", pipeline_page, methods=["GET"], name="pipeline"),
    ]


def _module_hrefs(console: Console, page: Page, manifest: PipelineManifest) -> dict[str, str]:
    """The console page of each step's module the caller may see (manage or call), by module name."""
    root = page.request.scope.get("root_path", "")
    hrefs: dict[str, str] = {}
    for step in manifest.spec.steps:
        policy = console.services.policies.policy(step.module)
        if policy is not None and may_call(page.principal, policy):
            hrefs[step.module] = f"{root}/modules/{quote(step.module, safe='')}"
    return hrefs


def _spec(console: Console, info: PipelineInfo) -> ApiSpec | None:
    """The pipeline's composed API, when every step can run (else None: its fields are not known)."""
    if not info.ready:
        return None
    try:
        return console.services.pipelines.find(info.name).spec
    except ModelportError:  # a step stopped running since `info` was read
        return None
