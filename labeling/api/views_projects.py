"""Auth token and project endpoints."""

from __future__ import annotations

from django.contrib.auth import authenticate
from django.db.models import F
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from labeling.api.serializers import (
    ProjectCreateSerializer,
    ProjectSerializer,
    TokenRequestSerializer,
    TokenResponseSerializer,
)
from labeling.models import Capability, Project
from labeling.services.projects import project_create


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


class ProjectListView(APIView):
    @extend_schema(responses={200: ProjectSerializer(many=True)})
    def get(self, request: Request) -> Response:
        projects = (
            Project.objects.for_user(request.user)
            .annotate(caller_role=F("memberships__role"))
            .select_related("current_taxonomy_version")
            .order_by("slug")
        )
        return Response(ProjectSerializer(projects, many=True).data)

    @extend_schema(request=ProjectCreateSerializer, responses={
        201: ProjectSerializer, 409: OpenApiResponse(description="A project with this slug already exists."),
    })
    def post(self, request: Request) -> Response:
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
