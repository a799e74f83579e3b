"""Control of a run from outside it: detaching, commands from other terminals, resuming."""
