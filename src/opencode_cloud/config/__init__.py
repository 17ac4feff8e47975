"""The tool's own files: where they live (`paths`), the configuration's schema (`schema`),
reading and writing it (`store`), and editing it key by key (`edit`).

Import the module you need: `paths` loads nothing heavy, the others load pydantic.
"""
