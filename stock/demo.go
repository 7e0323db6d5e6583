package stock

// DemoCatalogue is the small catalogue `sagaflow stock --seed` and the demo
// load. The teapot has so little stock that a second order for it shows
// "out of stock" without any flag.
func DemoCatalogue() []Product {
	return []Product{
		{ID: "tea", Name: "Green tea (100 g)", PriceCents: 450, Available: 500},
		{ID: "coffee", Name: "Coffee beans (250 g)", PriceCents: 1290, Available: 200},
		{ID: "mug", Name: "Stoneware mug", PriceCents: 800, Available: 50},
		{ID: "biscuits", Name: "Butter biscuits", PriceCents: 250, Available: 300},
		{ID: "teapot", Name: "Cast-iron teapot", PriceCents: 4500, Available: 2},
	}
}
