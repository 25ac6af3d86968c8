"""A taxonomy version as a SKOS concept scheme (Turtle or JSON-LD, through rdflib), and back: ``skos_export``,
``skos_parse``.

The mapping, so that a policy can be shared with knowledge-graph tooling and come back unchanged:

* the version is a ``skos:ConceptScheme`` (``skos:prefLabel`` its name, ``owl:versionInfo`` its number,
  ``skos:changeNote`` its changelog, ``dcterms:issued`` when it was published; ``sift:multiLabel`` and
  ``sift:allowNonLeaf`` its answer rules);
* each label is a ``skos:Concept`` in that scheme: ``skos:notation`` its key, ``skos:prefLabel`` its name,
  ``skos:definition`` its guideline (the Markdown as written), ``skos:broader``/``skos:narrower`` the tree (roots
  are ``skos:topConceptOf`` the scheme), ``skos:example`` the positive examples; Sift's own facts that SKOS has no
  term for use the ``sift:`` vocabulary: ``sift:negativeExample``, ``sift:severity``, ``sift:action``,
  ``sift:position`` (sibling order), ``sift:positiveExampleList``/``sift:negativeExampleList`` (the examples'
  order, as JSON: RDF keeps none) and ``owl:deprecated``.

``skos_parse`` reads any SKOS scheme: keys come from ``skos:notation`` (else the concept IRI's last segment), names
from ``skos:prefLabel`` (English or untagged first), guidelines from ``skos:definition``; siblings are ordered by
``sift:position`` when present, else by key. It returns the contract's taxonomy document, which the taxonomy
service validates like any imported JSON (keys, depth, size), so a hostile graph gets the same clear errors.
Plain Python and rdflib: no database.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from rdflib import RDF, BNode, Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCTERMS, OWL, SKOS, XSD

from labeling.services.errors import ValidationFailed

SIFT = Namespace("https://sift.dev/ns/taxonomy#")
FORMATS = {"turtle": "turtle", "json-ld": "json-ld"}
CONTENT_TYPES = {"turtle": "text/turtle; charset=utf-8", "json-ld": "application/ld+json"}
EXTENSIONS = {"turtle": "ttl", "json-ld": "jsonld"}
MAX_SKOS_BYTES = 2 * 1024 * 1024


def skos_export(document: dict[str, Any], *, scheme_iri: str, version: int | None = None, changelog: str = "",
                issued: str | None = None, fmt: str = "turtle") -> str:
    """``document`` (the contract's nested taxonomy JSON) as a SKOS concept scheme named ``scheme_iri``."""
    if fmt not in FORMATS:
        raise ValidationFailed(f"format: one of {', '.join(FORMATS)}", field="format")
    graph = Graph()
    graph.bind("skos", SKOS)
    graph.bind("sift", SIFT)
    graph.bind("dcterms", DCTERMS)
    graph.bind("owl", OWL)
    scheme = URIRef(scheme_iri)
    graph.add((scheme, RDF.type, SKOS.ConceptScheme))
    graph.add((scheme, SKOS.prefLabel, Literal(document.get("name", ""), lang="en")))
    graph.add((scheme, SIFT.multiLabel, Literal(bool(document.get("multi_label", False)))))
    graph.add((scheme, SIFT.allowNonLeaf, Literal(bool(document.get("allow_non_leaf", False)))))
    if version is not None:
        graph.add((scheme, OWL.versionInfo, Literal(str(version))))
    if changelog:
        graph.add((scheme, SKOS.changeNote, Literal(changelog, lang="en")))
    if issued:
        graph.add((scheme, DCTERMS.issued, Literal(issued, datatype=XSD.dateTime)))

    def add(nodes: list[dict[str, Any]], parent: URIRef | None) -> None:
        for position, node in enumerate(nodes):
            concept = URIRef(f"{scheme_iri}/{quote(str(node['key']), safe='')}")
            graph.add((concept, RDF.type, SKOS.Concept))
            graph.add((concept, SKOS.inScheme, scheme))
            graph.add((concept, SKOS.notation, Literal(node["key"])))
            graph.add((concept, SKOS.prefLabel, Literal(node.get("name") or node["key"], lang="en")))
            graph.add((concept, SIFT.position, Literal(position)))
            if node.get("description"):
                graph.add((concept, SKOS.definition, Literal(node["description"], lang="en")))
            positives, negatives = list(node.get("positive_examples") or []), list(node.get("negative_examples") or [])
            for example in positives:
                graph.add((concept, SKOS.example, Literal(example)))
            for example in negatives:
                graph.add((concept, SIFT.negativeExample, Literal(example)))
            # RDF keeps no order among a subject's values; the examples' order (which the guidelines show) rides
            # along as one JSON list each.
            if positives:
                graph.add((concept, SIFT.positiveExampleList, Literal(json.dumps(positives, ensure_ascii=False))))
            if negatives:
                graph.add((concept, SIFT.negativeExampleList, Literal(json.dumps(negatives, ensure_ascii=False))))
            if node.get("severity"):
                graph.add((concept, SIFT.severity, Literal(int(node["severity"]))))
            if node.get("action"):
                graph.add((concept, SIFT.action, Literal(node["action"])))
            if node.get("deprecated"):
                graph.add((concept, OWL.deprecated, Literal(True)))
            if parent is None:
                graph.add((concept, SKOS.topConceptOf, scheme))
                graph.add((scheme, SKOS.hasTopConcept, concept))
            else:
                graph.add((concept, SKOS.broader, parent))
                graph.add((parent, SKOS.narrower, concept))
            add(node.get("children") or [], concept)

    add(list(document.get("labels") or []), None)
    return graph.serialize(format=FORMATS[fmt])


def skos_format(*, content_type: str = "", filename: str = "") -> str | None:
    """"turtle" or "json-ld" from a request's content type or an upload's name; None when it names neither."""
    kind = content_type.split(";")[0].strip().lower()
    name = filename.lower()
    if kind == "text/turtle" or name.endswith(".ttl"):
        return "turtle"
    if kind == "application/ld+json" or name.endswith((".jsonld", ".json-ld")):
        return "json-ld"
    return None


def _text(graph: Graph, subject: Any, predicate: URIRef) -> str | None:
    values = [o for o in graph.objects(subject, predicate) if isinstance(o, Literal)]
    for value in sorted(values, key=lambda v: (v.language not in ("en", None), v.language or "", str(v))):
        return str(value)
    return None


def _ordered(graph: Graph, concept: Any, predicate: URIRef, order: URIRef) -> list[str]:
    """The values of ``predicate`` in the order the ``order`` JSON list gives (Sift's own files), else sorted."""
    values = {str(o) for o in graph.objects(concept, predicate)}
    listed = graph.value(concept, order)
    if isinstance(listed, Literal):
        try:
            ordered = json.loads(str(listed))
        except ValueError:
            ordered = None
        if isinstance(ordered, list) and set(map(str, ordered)) == values:
            return [str(v) for v in ordered]
    return sorted(values)


def skos_parse(data: bytes, *, fmt: str) -> dict[str, Any]:
    """The contract's taxonomy document read from a SKOS scheme (Turtle or JSON-LD); ValidationFailed if it is not
    one. The document is then validated by the taxonomy service like any import."""
    if fmt not in FORMATS:
        raise ValidationFailed(f"format: one of {', '.join(FORMATS)}", field="format")
    if len(data) > MAX_SKOS_BYTES:
        raise ValidationFailed(f"file: larger than {MAX_SKOS_BYTES:,} bytes", field="file")
    graph = Graph()
    try:
        graph.parse(data=data.decode("utf-8"), format=FORMATS[fmt])
    except Exception as exc:  # rdflib raises parser-specific errors of many types
        raise ValidationFailed(f"file: not valid {fmt} ({type(exc).__name__}: {str(exc)[:200]})",
                               field="file") from None
    schemes = sorted(set(graph.subjects(RDF.type, SKOS.ConceptScheme)), key=str)
    if len(schemes) != 1:
        raise ValidationFailed(f"file: expected one skos:ConceptScheme, found {len(schemes)}", field="file")
    scheme = schemes[0]
    concepts = set(graph.subjects(SKOS.inScheme, scheme)) | set(graph.subjects(SKOS.topConceptOf, scheme)) | set(
        graph.objects(scheme, SKOS.hasTopConcept))
    concepts = {c for c in concepts if not isinstance(c, BNode)}

    def key(concept: Any) -> str:
        return _text(graph, concept, SKOS.notation) or str(concept).rstrip("/").rsplit("/", 1)[-1].rsplit("#", 1)[-1]

    parent_of: dict[Any, Any] = {}
    for concept in concepts:
        parents = [p for p in graph.objects(concept, SKOS.broader) if p in concepts]
        parents += [p for p in graph.subjects(SKOS.narrower, concept) if p in concepts and p not in parents]
        if len(parents) > 1:
            raise ValidationFailed(f"file: concept {key(concept)!r} has {len(parents)} broader concepts; a Sift "
                                   "taxonomy is a tree", field="file")
        parent_of[concept] = parents[0] if parents else None

    def order(concept: Any) -> tuple[int, str]:
        position = graph.value(concept, SIFT.position)
        return (int(position) if isinstance(position, Literal) and str(position).isdigit() else 10**9, key(concept))

    def node(concept: Any, seen: frozenset[Any]) -> dict[str, Any]:
        if concept in seen:
            raise ValidationFailed(f"file: skos:broader loops through {key(concept)!r}", field="file")
        children = sorted((c for c, p in parent_of.items() if p == concept), key=order)
        out: dict[str, Any] = {"key": key(concept), "name": _text(graph, concept, SKOS.prefLabel) or key(concept),
                               "description": _text(graph, concept, SKOS.definition) or "",
                               "children": [node(child, seen | {concept}) for child in children]}
        positives = _ordered(graph, concept, SKOS.example, SIFT.positiveExampleList)
        negatives = _ordered(graph, concept, SIFT.negativeExample, SIFT.negativeExampleList)
        severity, action = graph.value(concept, SIFT.severity), graph.value(concept, SIFT.action)
        if positives:
            out["positive_examples"] = positives
        if negatives:
            out["negative_examples"] = negatives
        if severity is not None:
            out["severity"] = int(severity)
        if action is not None:
            out["action"] = str(action)
        if graph.value(concept, OWL.deprecated) is not None and bool(graph.value(concept, OWL.deprecated).toPython()):
            out["deprecated"] = True
        return out

    roots = sorted((c for c, p in parent_of.items() if p is None), key=order)
    if not roots and concepts:
        raise ValidationFailed("file: skos:broader loops: no top concept", field="file")
    multi = graph.value(scheme, SIFT.multiLabel)
    non_leaf = graph.value(scheme, SIFT.allowNonLeaf)
    return {"name": _text(graph, scheme, SKOS.prefLabel) or "Imported SKOS scheme",
            "multi_label": bool(multi.toPython()) if isinstance(multi, Literal) else False,
            "allow_non_leaf": bool(non_leaf.toPython()) if isinstance(non_leaf, Literal) else False,
            "labels": [node(root, frozenset()) for root in roots]}
