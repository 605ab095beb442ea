"""The pack's logic on plain torch: no ComfyUI import anywhere below this package."""
