"""PyTorch checkpoint import (EDM networks) to Flax, and export back to the same layout."""
