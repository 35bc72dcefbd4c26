"""Seed data: two tenants, their users, a staff user and entries."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand
from django.utils import timezone

from ...models import Entry, Membership, Tenant

PASSWORD = "demo"


class Command(BaseCommand):
    help = "Create the demo tenants, users (password 'demo') and entries."

    def handle(self, *args: Any, **options: Any) -> None:
        for slug, name, member in (
            ("acme", "Acme", "alice"),
            ("globex", "Globex", "bob"),
        ):
            tenant, _ = Tenant.objects.get_or_create(slug=slug, defaults={"name": name})
            user, created = User.objects.get_or_create(username=member)
            if created:
                user.set_password(PASSWORD)
                user.last_login = timezone.now()  # "recently active", for warming
                user.save()
            Membership.objects.get_or_create(user=user, defaults={"tenant": tenant})
            for i in range(1, 13):
                Entry.objects.get_or_create(
                    tenant=tenant, title=f"{name} item {i}", defaults={"price": 10 * i}
                )
        staff, created = User.objects.get_or_create(
            username="staff", defaults={"is_staff": True}
        )
        if created:
            staff.set_password(PASSWORD)
            staff.save()
        self.stdout.write(
            "Seeded: users alice (Acme), bob (Globex), staff; password 'demo'."
        )
