"""Snapshot status (pending/running/done/failed) with the error of a failed attempt.

Snapshots that exist already were written synchronously and are complete: they are added as ``done``; the
default for new rows is then ``pending``.
"""

from django.db import migrations, models

STATUSES = [('pending', 'Pending'), ('running', 'Running'), ('done', 'Done'), ('failed', 'Failed')]


class Migration(migrations.Migration):

    dependencies = [
        ('labeling', '0005_privacy_and_audit_chain'),
    ]

    operations = [
        migrations.AddField(
            model_name='exportsnapshot',
            name='attempts',
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='exportsnapshot',
            name='error',
            field=models.TextField(blank=True, default='', help_text='Why the last attempt failed.'),
        ),
        migrations.AddField(
            model_name='exportsnapshot',
            name='finished_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='exportsnapshot',
            name='started_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='exportsnapshot',
            name='status',
            field=models.CharField(choices=STATUSES, default='done', max_length=16),
        ),
        migrations.AlterField(
            model_name='exportsnapshot',
            name='status',
            field=models.CharField(choices=STATUSES, default='pending', max_length=16),
        ),
        migrations.AlterField(
            model_name='exportsnapshot',
            name='path',
            field=models.CharField(blank=True, default='', max_length=500,
                                  help_text='Relative to settings.EXPORT_ROOT; written by Sift only.'),
        ),
        migrations.AlterField(
            model_name='exportsnapshot',
            name='row_count',
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='exportsnapshot',
            name='sha256',
            field=models.CharField(blank=True, default='', max_length=64),
        ),
        migrations.AlterField(
            model_name='exportsnapshot',
            name='size_bytes',
            field=models.BigIntegerField(blank=True, null=True),
        ),
    ]
