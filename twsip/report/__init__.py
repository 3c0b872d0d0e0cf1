"""What a finished run looks like to a person or a tool: text and HTML ladders, the JSON
report and the summary. It reads results only; nothing here runs or changes a flow.
"""
