"""recbole_llm models, one file per model named after its class in lower case."""
