"""Test helpers shipped with the package (as transformers ships ``testing_utils``): tiny models built from config."""
