"""`manage.py seed_demo`: create the demo concert, seats and users (idempotent)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from reservations.demo import demo_seed


class Command(BaseCommand):
    help = (
        "Create a demo concert with a performance and 300 seats, users alice, bob "
        "and carol (password 'password') with wallets and API tokens, and superuser "
        "admin/admin; print the tokens. Running it again creates nothing twice."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        report = demo_seed()
        for line in report.created:
            self.stdout.write(self.style.SUCCESS(f"created   {line}"))
        for line in report.existing:
            self.stdout.write(f"exists    {line}")
        if not report.created:
            self.stdout.write("Nothing to create: the demo data is already there.")
        self.stdout.write("API tokens (send 'Authorization: Token <key>'):")
        for username, key in report.tokens.items():
            self.stdout.write(f"token     {username:<6} {key}")
