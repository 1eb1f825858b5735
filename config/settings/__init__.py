"""Settings modules: base (shared), dev, test and prod. Every value is read via django-environ."""
