"""API routes. Each area keeps its views in its own module (views_<area>.py)."""

from __future__ import annotations

from django.urls import path

from labeling.api import (
    views_export,
    views_history,
    views_import_jobs,
    views_items,
    views_privacy,
    views_projects,
    views_quality,
    views_queue,
    views_taxonomy,
    views_taxonomy_skos,
)

urlpatterns = [
    path("auth/token/", views_projects.TokenView.as_view(), name="api-token"),
    path("projects/", views_projects.ProjectListView.as_view(), name="api-projects"),
    path("projects/<slug:slug>/", views_projects.ProjectDetailView.as_view(), name="api-project"),
    path("projects/<slug:slug>/items/import", views_items.ItemImportView.as_view(), name="api-items-import"),
    path("projects/<slug:slug>/imports/", views_import_jobs.ImportJobListView.as_view(), name="api-import-jobs"),
    path("projects/<slug:slug>/imports/<int:job_id>/", views_import_jobs.ImportJobDetailView.as_view(),
         name="api-import-job"),
    path("projects/<slug:slug>/imports/<int:job_id>/errors", views_import_jobs.ImportJobErrorsView.as_view(),
         name="api-import-job-errors"),
    # Privacy: masking and retention settings, the audited reveal, hard deletion (labeling/api/views_privacy.py).
    path("projects/<slug:slug>/privacy", views_privacy.PrivacySettingsView.as_view(), name="api-privacy"),
    path("projects/<slug:slug>/items/<int:item_id>/reveal", views_privacy.ItemRevealView.as_view(),
         name="api-item-reveal"),
    path("projects/<slug:slug>/items/delete", views_privacy.ItemDeleteView.as_view(), name="api-items-delete"),
    # An item's answers, comments and adjudication, for policy leads (labeling/api/views_history.py).
    path("projects/<slug:slug>/items/<int:item_id>/history/", views_history.ItemHistoryView.as_view(),
         name="api-item-history"),
    path("projects/<slug:slug>/items/history/", views_history.ItemHistoryByExternalIdView.as_view(),
         name="api-item-history-by-external-id"),
    # Taxonomy: versions, diff, draft editing and publishing (labeling/api/views_taxonomy.py).
    path("projects/<slug:slug>/taxonomy/", views_taxonomy.TaxonomyCurrentView.as_view(), name="api-taxonomy"),
    path("projects/<slug:slug>/taxonomy/versions/", views_taxonomy.TaxonomyVersionListView.as_view(),
         name="api-taxonomy-versions"),
    path("projects/<slug:slug>/taxonomy/versions/<int:number>/", views_taxonomy.TaxonomyVersionDetailView.as_view(),
         name="api-taxonomy-version"),
    path("projects/<slug:slug>/taxonomy/diff", views_taxonomy.TaxonomyDiffView.as_view(), name="api-taxonomy-diff"),
    path("projects/<slug:slug>/taxonomy/export", views_taxonomy.TaxonomyExportView.as_view(),
         name="api-taxonomy-export"),
    path("projects/<slug:slug>/taxonomy/import", views_taxonomy.TaxonomyImportView.as_view(),
         name="api-taxonomy-import"),
    path("projects/<slug:slug>/taxonomy/skos", views_taxonomy_skos.TaxonomySkosView.as_view(),
         name="api-taxonomy-skos"),
    path("projects/<slug:slug>/taxonomy/draft", views_taxonomy.TaxonomyDraftView.as_view(), name="api-taxonomy-draft"),
    path("projects/<slug:slug>/taxonomy/draft/preview", views_taxonomy.TaxonomyDraftPreviewView.as_view(),
         name="api-taxonomy-draft-preview"),
    path("projects/<slug:slug>/taxonomy/draft/publish", views_taxonomy.TaxonomyDraftPublishView.as_view(),
         name="api-taxonomy-draft-publish"),
    # The reviewer queue: leases, submit, skip, renew, undo, progress (labeling/api/views_queue.py).
    path("projects/<slug:slug>/queue/next", views_queue.QueueNextView.as_view(), name="api-queue-next"),
    path("projects/<slug:slug>/progress", views_queue.ProgressView.as_view(), name="api-progress"),
    path("leases/<int:lease_id>/submit", views_queue.LeaseSubmitView.as_view(), name="api-lease-submit"),
    path("leases/<int:lease_id>/skip", views_queue.LeaseSkipView.as_view(), name="api-lease-skip"),
    path("leases/<int:lease_id>/renew", views_queue.LeaseRenewView.as_view(), name="api-lease-renew"),
    path("leases/<int:lease_id>/undo", views_queue.LeaseUndoView.as_view(), name="api-lease-undo"),
    # Exports: the streamed training set and named snapshots (labeling/api/views_export.py).
    path("projects/<slug:slug>/export", views_export.ExportView.as_view(), name="api-export"),
    path("projects/<slug:slug>/exports/", views_export.SnapshotListView.as_view(), name="api-export-snapshots"),
    path("projects/<slug:slug>/exports/<slug:name>/", views_export.SnapshotDetailView.as_view(),
         name="api-export-snapshot"),
    path("projects/<slug:slug>/exports/<slug:name>/download", views_export.SnapshotDownloadView.as_view(),
         name="api-export-snapshot-download"),
    path("projects/<slug:slug>/exports/<slug:name>/retry", views_export.SnapshotRetryView.as_view(),
         name="api-export-snapshot-retry"),
    # Quality: stats for the dashboard and the adjudication queue (labeling/api/views_quality.py).
    path("projects/<slug:slug>/stats/", views_quality.StatsSummaryView.as_view(), name="api-stats"),
    path("projects/<slug:slug>/stats/agreement", views_quality.AgreementView.as_view(), name="api-stats-agreement"),
    path("projects/<slug:slug>/stats/reviewers", views_quality.ReviewerStatsView.as_view(), name="api-stats-reviewers"),
    path("projects/<slug:slug>/stats/prevalence", views_quality.PrevalenceView.as_view(), name="api-stats-prevalence"),
    path("projects/<slug:slug>/stats/queue-health", views_quality.QueueHealthView.as_view(),
         name="api-stats-queue-health"),
    path("projects/<slug:slug>/stats/timeline", views_quality.TimelineView.as_view(), name="api-stats-timeline"),
    path("projects/<slug:slug>/adjudications/", views_quality.AdjudicationListView.as_view(), name="api-adjudications"),
    path("projects/<slug:slug>/adjudications/<int:adjudication_id>/", views_quality.AdjudicationDetailView.as_view(),
         name="api-adjudication"),
    path("projects/<slug:slug>/adjudications/<int:adjudication_id>/decide",
         views_quality.AdjudicationDecideView.as_view(), name="api-adjudication-decide"),
]
