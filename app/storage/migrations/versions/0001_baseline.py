"""baseline: the schema of release 0.1.0 (what its `create_all` made), so databases it wrote can be stamped

Revision ID: 0001_baseline
Revises: (none)
Create Date: 2026-12-01 22:00:02.662867
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.storage.tables

revision = '0001_baseline'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('comparisons',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('created_at', app.storage.tables.UTCDateTime(), nullable=False),
    sa.Column('rater', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('blind', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('comparisons', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_comparisons_created_at'), ['created_at'], unique=False)

    op.create_table('images',
    sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('original_name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('format', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('first_seen', app.storage.tables.UTCDateTime(), nullable=False),
    sa.CheckConstraint('size_bytes >= 0', name='ck_images_size'),
    sa.CheckConstraint('width > 0 AND height > 0', name='ck_images_dims'),
    sa.PrimaryKeyConstraint('sha256')
    )
    op.create_table('measured_sizes',
    sa.Column('model', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('measured_gb', sa.Float(), nullable=False),
    sa.Column('measured_at', app.storage.tables.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('model')
    )
    op.create_table('comparison_images',
    sa.Column('comparison_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.CheckConstraint('position >= 0', name='ck_comparison_images_position'),
    sa.ForeignKeyConstraint(['comparison_id'], ['comparisons.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['sha256'], ['images.sha256'], ),
    sa.PrimaryKeyConstraint('comparison_id', 'position')
    )
    with op.batch_alter_table('comparison_images', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_comparison_images_sha256'), ['sha256'], unique=False)

    op.create_table('outputs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('comparison_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('model', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('repo', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('revision', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('backend', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('runtime', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('transformers_version', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('dtype', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('seed', sa.Integer(), nullable=True),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('image_note', sa.Text(), nullable=True),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('ttft_s', sa.Float(), nullable=True),
    sa.Column('total_s', sa.Float(), nullable=True),
    sa.Column('prompt_tokens', sa.Integer(), nullable=True),
    sa.Column('tokens', sa.Integer(), nullable=True),
    sa.Column('tokens_per_s', sa.Float(), nullable=True),
    sa.Column('created_at', app.storage.tables.UTCDateTime(), nullable=False),
    sa.Column('finished_at', app.storage.tables.UTCDateTime(), nullable=True),
    sa.CheckConstraint("backend IN ('local', 'remote')", name='ck_outputs_backend'),
    sa.CheckConstraint("status IN ('queued', 'loading', 'generating', 'done', 'error', 'interrupted')", name='ck_outputs_status'),
    sa.ForeignKeyConstraint(['comparison_id'], ['comparisons.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('comparison_id', 'position', name='uq_outputs_position')
    )
    with op.batch_alter_table('outputs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outputs_model'), ['model'], unique=False)

    op.create_table('ratings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('output_id', sa.Integer(), nullable=False),
    sa.Column('score', sa.Integer(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('rater', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_at', app.storage.tables.UTCDateTime(), nullable=False),
    sa.Column('updated_at', app.storage.tables.UTCDateTime(), nullable=False),
    sa.CheckConstraint('score BETWEEN 1 AND 5', name='ck_ratings_score'),
    sa.ForeignKeyConstraint(['output_id'], ['outputs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('output_id', 'rater', name='uq_ratings_output_rater')
    )
    with op.batch_alter_table('ratings', schema=None) as batch_op:
        batch_op.create_index('ix_ratings_updated_at', ['updated_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('ratings', schema=None) as batch_op:
        batch_op.drop_index('ix_ratings_updated_at')

    op.drop_table('ratings')
    with op.batch_alter_table('outputs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outputs_model'))

    op.drop_table('outputs')
    with op.batch_alter_table('comparison_images', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_comparison_images_sha256'))

    op.drop_table('comparison_images')
    op.drop_table('measured_sizes')
    op.drop_table('images')
    with op.batch_alter_table('comparisons', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_comparisons_created_at'))

    op.drop_table('comparisons')
