from .hooks import RecordingHooks

HOOKS = (RecordingHooks(),)
