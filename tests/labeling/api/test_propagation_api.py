"""GET/PUT /api/projects/{slug}/propagation/ (the stats figure: tests/labeling/services/test_propagation.py)."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from labeling.models import AuditEvent, PropagationPolicy
from tests.factories import ProjectFactory, member

pytestmark = pytest.mark.django_db


def client_for(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_a_lead_sets_a_label_policy_and_a_reviewer_cannot() -> None:
    project = ProjectFactory(slug="prop-api")
    lead, reviewer = (member(project, username="lead", role="policy_lead"),
                      member(project, username="rev", role="reviewer"))
    url = f"/api/projects/{project.slug}/propagation/"
    denied = client_for(reviewer).put(url, {"label": "bad", "mode": "propagate"}, format="json")
    assert denied.status_code == 403
    assert not PropagationPolicy.objects.exists()
    refused = client_for(lead).put(url, {"label": "nope", "mode": "propagate"}, format="json")
    assert refused.status_code == 400
    assert "not a label of the current taxonomy" in refused.json()["detail"]
    assert not PropagationPolicy.objects.exists()
    response = client_for(lead).put(url, {"label": "bad", "mode": "propagate", "threshold": 0.9,
                                          "verification_share": 0.1}, format="json")
    assert response.status_code == 200
    assert response.json() == {
        "policies": [{"label": "ok", "mode": "off", "threshold": 0.8, "verification_share": 0.05},
                     {"label": "bad", "mode": "propagate", "threshold": 0.9, "verification_share": 0.1}],
        "precision": []}
    assert client_for(reviewer).get(url).json() == response.json()
    assert AuditEvent.objects.filter(action="propagation.policy").count() == 1

