"""Control of a running orchestration from any terminal or host: commands through Postgres."""
