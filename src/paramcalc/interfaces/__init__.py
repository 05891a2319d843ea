"""What users touch besides the Python API: the command line, text and Markdown renderings, plots,
progress bars and the generated kind reference."""
