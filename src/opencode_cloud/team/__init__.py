"""Team mode: one front door, a sign-in and an opencode of their own for each person
(docs/team.md)."""
