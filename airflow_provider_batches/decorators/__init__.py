"""The provider's TaskFlow decorators, registered through the provider info's ``task-decorators``."""
