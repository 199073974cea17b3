"""The one error a knowledge file, the terminology pack or a site code map raises when unusable."""


class KnowledgeError(ValueError):
    """The knowledge is unusable; the message names the file and the entry."""
