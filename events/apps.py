from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class EventsConfig(AppConfig):
    name = "events"
    verbose_name = "Event pipeline"

    def ready(self) -> None:
        # Handlers register themselves at import, the way Zulip's @assign_queue fills its
        # worker table; importing every app's handlers.py makes the registry complete.
        autodiscover_modules("handlers")
