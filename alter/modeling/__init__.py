"""The model core: :class:`~alter.modeling.layer.AlterLinear`, the wrapped model
(:mod:`alter.modeling.model`), its routing (entropy, question router, routing unit and state),
generation, saving and loading adapters, and loading the base model (:mod:`alter.modeling.model_loading`)."""
