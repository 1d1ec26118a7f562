"""What people read: tables in the paper's layout (Markdown, CSV, plots) and the HTML report."""
