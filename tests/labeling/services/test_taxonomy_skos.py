"""Taxonomy versions as SKOS (labeling/services/taxonomy_skos.py and /api/projects/{slug}/taxonomy/skos)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rdflib import Graph, Literal, URIRef
from rdflib.namespace import SKOS

from labeling.services.errors import ValidationFailed
from labeling.services.taxonomy_io import taxonomy_parse
from labeling.services.taxonomy_skos import skos_export, skos_parse

POLICY: dict[str, Any] = {
    "name": "Abuse policy", "multi_label": True, "allow_non_leaf": False,
    "labels": [
        {"key": "ok", "name": "Not abusive", "description": "Everything else.", "children": []},
        {"key": "abuse", "name": "Abuse", "description": "**Targets** a person.", "severity": 3, "action": "remove",
         "positive_examples": ["you are worthless", "I will find you"], "negative_examples": ["that film was awful"],
         "children": [
             {"key": "abuse/threat", "name": "Threat", "description": "Threatens harm.", "children": []},
             {"key": "abuse/slur", "name": "Slur", "description": "Uses a slur.", "deprecated": True,
              "children": []}]},
    ],
}
IRI = "https://sift.example/api/projects/p/taxonomy/versions/3"


def normal(document: dict[str, Any]) -> Any:
    """What the taxonomy service stores of a document (its parse), comparable across round trips."""
    return taxonomy_parse(document)


@pytest.mark.parametrize("fmt", ["turtle", "json-ld"])
def test_round_trip_keeps_every_label_fact(fmt: str) -> None:
    text = skos_export(POLICY, scheme_iri=IRI, version=3, changelog="Adds threat", fmt=fmt)
    back = skos_parse(text.encode(), fmt=fmt)
    assert normal(back) == normal(POLICY)
    assert [node["key"] for node in back["labels"]] == ["ok", "abuse"]  # sibling order kept (sift:position)
    assert back["labels"][1]["children"][1]["deprecated"] is True


def test_the_graph_says_it_in_skos() -> None:
    graph = Graph().parse(data=skos_export(POLICY, scheme_iri=IRI, version=3, changelog="Adds threat"),
                          format="turtle")
    scheme, threat, abuse = URIRef(IRI), URIRef(IRI + "/abuse%2Fthreat"), URIRef(IRI + "/abuse")
    assert (threat, SKOS.broader, abuse) in graph and (abuse, SKOS.narrower, threat) in graph
    assert (abuse, SKOS.topConceptOf, scheme) in graph
    assert (abuse, SKOS.definition, Literal("**Targets** a person.", lang="en")) in graph
    assert (threat, SKOS.notation, Literal("abuse/threat")) in graph
    assert (scheme, SKOS.changeNote, Literal("Adds threat", lang="en")) in graph


def test_a_foreign_scheme_without_sift_terms_reads_by_notation_or_iri() -> None:
    turtle = b"""
    @prefix skos: <http://www.w3.org/2004/02/skos/core#> .
    <http://x.org/s> a skos:ConceptScheme ; skos:prefLabel "Foreign"@en .
    <http://x.org/s/b> a skos:Concept ; skos:inScheme <http://x.org/s> ; skos:prefLabel "Bee"@en, "Biene"@de .
    <http://x.org/s/a> a skos:Concept ; skos:inScheme <http://x.org/s> ; skos:notation "a" ; skos:prefLabel "A" ;
        skos:definition "Def A"@en .
    <http://x.org/s/a1> a skos:Concept ; skos:inScheme <http://x.org/s> ; skos:broader <http://x.org/s/a> .
    """
    assert skos_parse(turtle, fmt="turtle") == {
        "name": "Foreign", "multi_label": False, "allow_non_leaf": False, "labels": [
            {"key": "a", "name": "A", "description": "Def A", "children": [
                {"key": "a1", "name": "a1", "description": "", "children": []}]},
            {"key": "b", "name": "Bee", "description": "", "children": []}]}


@pytest.mark.parametrize(("data", "message"), [
    (b"not turtle at all {", "file: not valid turtle"),
    (b"@prefix skos: <http://www.w3.org/2004/02/skos/core#> . <http://x/c> a skos:Concept .",
     "file: expected one skos:ConceptScheme, found 0"),
])
def test_bad_files_are_clear_errors(data: bytes, message: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        skos_parse(data, fmt="turtle")
    assert info.value.message.startswith(message)


@pytest.mark.django_db
def test_api_export_and_import_into_the_draft(cast: dict[str, Any], api_as: Any) -> None:
    lead = api_as(cast["users"]["policy_lead"])
    response = lead.get("/api/projects/sms/taxonomy/skos?format=json-ld")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/ld+json"
    assert response["Content-Disposition"] == 'attachment; filename="sms-taxonomy-v1.jsonld"'
    assert isinstance(json.loads(response.content), list | dict)
    turtle = lead.get("/api/projects/sms/taxonomy/skos").content
    edited = turtle.replace(b'"Spam"@en', b'"Spam and scams"@en')
    imported = lead.post("/api/projects/sms/taxonomy/skos", {"file": SimpleUploadedFile("policy.ttl", edited)},
                         format="multipart")
    assert imported.status_code == 200, imported.content
    names = {node["key"]: node["name"] for node in imported.json()["document"]["labels"]}
    assert names == {"ham": "Ham", "spam": "Spam and scams"}
    raw = lead.generic("POST", "/api/projects/sms/taxonomy/skos", turtle, content_type="text/turtle")
    assert raw.status_code == 200
    assert {n["key"]: n["name"] for n in raw.json()["document"]["labels"]} == {"ham": "Ham", "spam": "Spam"}
    denied = api_as(cast["users"]["ml_engineer"]).post("/api/projects/sms/taxonomy/skos",
                                                       {"file": SimpleUploadedFile("p.ttl", edited)},
                                                       format="multipart")
    assert denied.status_code == 403
