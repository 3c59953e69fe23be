"""indexes for the history's filters: comparisons and ratings by rater, answers by comparison and model

Revision ID: 0003_history_indexes
Revises: 0002_battles
Create Date: 2026-12-02 06:40:00.000000
"""

from __future__ import annotations

from alembic import op

revision = '0003_history_indexes'
down_revision = '0002_battles'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('comparisons', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_comparisons_rater'), ['rater'], unique=False)
    with op.batch_alter_table('outputs', schema=None) as batch_op:
        batch_op.create_index('ix_outputs_comparison_model', ['comparison_id', 'model'], unique=False)
    with op.batch_alter_table('ratings', schema=None) as batch_op:
        batch_op.create_index('ix_ratings_rater', ['rater'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('ratings', schema=None) as batch_op:
        batch_op.drop_index('ix_ratings_rater')
    with op.batch_alter_table('outputs', schema=None) as batch_op:
        batch_op.drop_index('ix_outputs_comparison_model')
    with op.batch_alter_table('comparisons', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_comparisons_rater'))
