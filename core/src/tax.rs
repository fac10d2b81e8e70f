//! The Grand Exchange tax on sales, by the rule in force at a date.
//!
//! - before 2021-12-09: no tax;
//! - from 2021-12-09: 1 % of the sell price per item, rounded down (so an
//!   item sold under 100 gp pays nothing), capped at 5,000,000 gp per item;
//! - from 2025-05-29: 2 %, rounded down (nothing under 50 gp), same cap;
//! - exempt: the Old school bond and the items the game lists as exempt
//!   (basic tools), [`EXEMPT`]; from 2025-05-29 also [`EXEMPT_FROM_2025_05_29`]
//!   (low-level food, teleport tablets, bronze to steel arrows and darts,
//!   mind runes, energy potions, the ring of dueling(8)). Exemptions are
//!   dated: a sale before that day pays the tax on those.

use crate::ItemId;

/// 2021-12-09 00:00 UTC: the 1 % tax starts.
pub const TAX_1PCT_FROM: i64 = 1_639_008_000;
/// 2025-05-29 00:00 UTC: the rate becomes 2 %.
pub const TAX_2PCT_FROM: i64 = 1_748_476_800;
/// Most tax paid on one item.
pub const TAX_CAP: i64 = 5_000_000;

/// Items exempt from the tax: Old school bond, chisel, gardening trowel,
/// glassblowing pipe, hammer, needle, pestle and mortar, rake, saw,
/// secateurs, seed dibber, shears, spade, watering can (0).
pub const EXEMPT: [ItemId; 14] = [
    13190, 1755, 5325, 1785, 2347, 1733, 233, 5341, 8794, 5329, 5343, 1735, 952, 5331,
];

/// Items exempt from 2025-05-29 (with the 2 % rate), by id: Ardougne,
/// Camelot, Civitas illa Fortis, Falador, Kourend castle, Lumbridge, Varrock
/// and house teleport tablets; bass, bread, cake, cooked chicken, cooked
/// meat, herring, lobster, mackerel, meat pie, pike, salmon, shrimps, tuna;
/// bronze, iron and steel arrows and darts; mind rune; energy potion (1–4);
/// ring of dueling(8). As the flipping plugins list them in late 2025, with
/// the energy potions the game's announcement names.
pub const EXEMPT_FROM_2025_05_29: [ItemId; 33] = [
    8011, 8010, 28824, 8009, 28790, 8008, 8007, 8013, 365, 2309, 1891, 2140, 2142, 347, 379, 355,
    2327, 351, 329, 315, 361, 882, 884, 886, 806, 807, 808, 558, 3008, 3010, 3012, 3014, 2552,
];

/// Whether `item` pays no tax on a sale at Unix time `t`.
pub fn exempt(item: ItemId, t: i64) -> bool {
    EXEMPT.contains(&item) || (t >= TAX_2PCT_FROM && EXEMPT_FROM_2025_05_29.contains(&item))
}

/// Tax rate in percent at Unix time `t`.
pub fn rate_pct(t: i64) -> i64 {
    if t >= TAX_2PCT_FROM {
        2
    } else if t >= TAX_1PCT_FROM {
        1
    } else {
        0
    }
}

/// Tax on selling one `item` at `price` at time `t`.
pub fn tax(item: ItemId, price: i64, t: i64) -> i64 {
    if exempt(item, t) || price <= 0 {
        return 0;
    }
    (price * rate_pct(t) / 100).min(TAX_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE_2025: i64 = TAX_2PCT_FROM - 1;

    #[test]
    fn rates_by_date() {
        assert_eq!(
            tax(4151, 2_000_000, TAX_1PCT_FROM - 1),
            0,
            "no tax before 2021-12-09"
        );
        assert_eq!(tax(4151, 2_000_000, TAX_1PCT_FROM), 20_000);
        assert_eq!(tax(4151, 2_000_000, BEFORE_2025), 20_000);
        assert_eq!(tax(4151, 2_000_000, TAX_2PCT_FROM), 40_000);
    }

    #[test]
    fn rounded_down_per_item_with_thresholds() {
        assert_eq!(tax(4151, 99, BEFORE_2025), 0, "1 %: nothing under 100 gp");
        assert_eq!(tax(4151, 100, BEFORE_2025), 1);
        assert_eq!(tax(4151, 199, BEFORE_2025), 1);
        assert_eq!(tax(4151, 49, TAX_2PCT_FROM), 0, "2 %: nothing under 50 gp");
        assert_eq!(tax(4151, 50, TAX_2PCT_FROM), 1);
        assert_eq!(tax(4151, 149, TAX_2PCT_FROM), 2);
    }

    #[test]
    fn capped_and_exempt() {
        assert_eq!(tax(20997, 500_000_000, BEFORE_2025), TAX_CAP);
        assert_eq!(tax(20997, 250_000_000, TAX_2PCT_FROM), TAX_CAP);
        assert_eq!(tax(20997, 249_999_999, TAX_2PCT_FROM), 4_999_999);
        assert_eq!(
            tax(13190, 10_000_000, TAX_2PCT_FROM),
            0,
            "the bond is exempt"
        );
        assert_eq!(tax(2347, 1_000, TAX_2PCT_FROM), 0, "a hammer is exempt");
    }

    #[test]
    fn exemptions_are_dated() {
        // A lobster (379) and an energy potion(4) (3008) paid 1 % before
        // 2025-05-29 and nothing from that day; the hammer never paid.
        assert_eq!(tax(379, 200, BEFORE_2025), 2);
        assert_eq!(tax(379, 200, TAX_2PCT_FROM), 0);
        assert_eq!(tax(3008, 300, BEFORE_2025), 3);
        assert_eq!(tax(3008, 300, TAX_2PCT_FROM), 0);
        assert_eq!(tax(2347, 1_000, BEFORE_2025), 0);
        assert!(EXEMPT_FROM_2025_05_29.iter().all(|i| !EXEMPT.contains(i)));
    }
}
