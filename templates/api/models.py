"""The database tables (SQLAlchemy 2 declarative models through Flask-SQLAlchemy)."""

from __future__ import annotations

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Base class of the models."""


db = SQLAlchemy(model_class=Base)


class Item(db.Model):
    """An item: a name, a description and a price in cents."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(1000), default="")
    price_cents: Mapped[int] = mapped_column(default=0)
