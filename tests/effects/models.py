from django.db import models


class Effect(models.Model):
    """One row per successful handler run; no unique constraint, so doubles would show."""

    ping_id = models.CharField(max_length=100)
    n = models.IntegerField()
    handler = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.handler}: {self.ping_id}"
