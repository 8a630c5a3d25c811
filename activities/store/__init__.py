"""The story store: SQLAlchemy models, Alembic migrations, the repository and its activities.

Import from the modules: ``db`` (open_store, upgrade), ``repository`` (StoryRepository,
RenderLease), ``activities`` (StoreActivities). Kept empty so ``upgrade`` loads quickly.
"""
