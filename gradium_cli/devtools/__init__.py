"""Developer tools: documentation and completion generators (not used at run time)."""
