"""Auth token and project endpoints."""

from __future__ import annotations

from django.contrib.auth import authenticate
from django.db.models import F
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from labeling.api.errors import validated
from labeling.api.pagination import page
from labeling.api.serializers import (
    ProjectCreateSerializer,
    ProjectSerializer,
    TokenRequestSerializer,
    TokenResponseSerializer,
)
from labeling.models import Capability, Project
from labeling.services.errors import PermissionDenied
from labeling.services.projects import project_create, project_creation_allowed


class TokenView(APIView):
    """Exchange a username and password for an API token."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "login"

    @extend_schema(request=TokenRequestSerializer, responses={
        200: TokenResponseSerializer,
        400: OpenApiResponse(description="Invalid username or password (code `invalid_credentials`)."),
        429: OpenApiResponse(description="Too many attempts: throttled, or the account is locked out for a while."),
    })
    def post(self, request: Request) -> Response:
        serializer = TokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = authenticate(request._request, username=serializer.validated_data["username"],
                            password=serializer.validated_data["password"])
        if user is None or not user.is_active:
            return Response({"detail": "Invalid username or password.", "code": "invalid_credentials"},
                            status=status.HTTP_400_BAD_REQUEST)
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})


PROJECTS_PAGE = 100
PROJECTS_PAGE_MAX = 500


class ProjectListQuerySerializer(serializers.Serializer):  # type: ignore[type-arg]
    limit = serializers.IntegerField(min_value=1, max_value=PROJECTS_PAGE_MAX, default=PROJECTS_PAGE)
    after = serializers.SlugField(max_length=64, required=False)


class ProjectListView(APIView):
    """The caller's projects by slug, ``limit`` per page (default 100). Pages are keyset cursors on the slug:
    when more remain, ``Link: <...?limit=N&after=SLUG>; rel="next"`` names the next page. The body stays
    CONTRACT.md's plain JSON list, so a caller with fewer projects than a page sees what it always saw."""

    @extend_schema(
        parameters=[OpenApiParameter("limit", int, description=f"Page size (1-{PROJECTS_PAGE_MAX}, default "
                                                               f"{PROJECTS_PAGE})."),
                    OpenApiParameter("after", str, description="Only projects whose slug sorts after this one "
                                                              "(the next page; see the Link header).")],
        responses={200: ProjectSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        query = validated(ProjectListQuerySerializer, request.query_params)
        projects = (
            Project.objects.for_user(request.user)
            .annotate(caller_role=F("memberships__role"))
            .select_related("current_taxonomy_version")
            .order_by("slug")
        )
        if "after" in query:
            projects = projects.filter(slug__gt=query["after"])
        return page(list(projects[:query["limit"] + 1]), query["limit"], request,
                    body=lambda shown: ProjectSerializer(shown, many=True).data,
                    cursor=lambda last: {"after": last.slug})

    @extend_schema(
        description="Create a project; the caller becomes its admin. Only users allowed to create projects may "
                    "(SIFT_PROJECT_CREATORS: by default superusers and holders of the labeling.add_project "
                    "permission); anyone else gets 403 whatever the body, so the answer never says whether a "
                    "slug exists.",
        request=ProjectCreateSerializer, responses={
            201: ProjectSerializer,
            403: OpenApiResponse(description="The caller may not create projects (code `permission_denied`)."),
            409: OpenApiResponse(description="The slug is not available (taken by a project, whether or not the "
                                             "caller belongs to it)."),
        })
    def post(self, request: Request) -> Response:
        # Before the body is read: a refused caller gets the same 403 for a free slug, a taken one or garbage.
        if not project_creation_allowed(request.user):
            raise PermissionDenied("you may not create projects; ask a Sift administrator")
        serializer = ProjectCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        project = project_create(actor=request.user, **serializer.validated_data)
        project = Project.objects.get_for(request.user, project.slug, Capability.VIEW)
        return Response(ProjectSerializer(project).data, status=status.HTTP_201_CREATED)


class ProjectDetailView(APIView):
    @extend_schema(responses={200: ProjectSerializer})
    def get(self, request: Request, slug: str) -> Response:
        project = Project.objects.get_for(request.user, slug, Capability.VIEW)
        return Response(ProjectSerializer(project).data)
