"""French words for every code the portal shows. Pure data: a code never reaches a page bare
(``label`` falls back to the code only for a value added to a contract after this table)."""

from __future__ import annotations

from collections.abc import Mapping

SERVICES = {
    "initial_assessment": "Évaluation initiale",
    "responsibility_course": "Stage de responsabilisation",
    "discussion_group": "Groupe de parole",
    "psychological_followup": "Suivi psychologique",
    "psychiatric_followup": "Suivi psychiatrique",
    "addiction_care": "Soins en addictologie",
    "social_support": "Accompagnement social",
    "employment_support": "Accompagnement vers l'emploi",
    "eviction_housing": "Hébergement (éviction du domicile)",
    "probationary_placement": "Placement probatoire",
    "helpline_orientation": "Écoute et orientation",
}
FRAMES = {
    "alternative_orientation": "Alternative aux poursuites : orientation (art. 41-1 2° CPP)",
    "alternative_eviction": "Alternative aux poursuites : éviction du domicile (art. 41-1 6° CPP)",
    "composition_penale": "Composition pénale (art. 41-2 CPP)",
    "crpc": "Comparution sur reconnaissance préalable de culpabilité",
    "controle_judiciaire": "Contrôle judiciaire (art. 138 17° CPP)",
    "cjpp": "Contrôle judiciaire avec placement probatoire (art. 138 18° CPP)",
    "sursis_probatoire": "Sursis probatoire (art. 132-45 CP)",
    "responsibility_course_penalty": "Peine de stage de responsabilisation (art. 131-5-1 CP)",
    "sentence_adjustment": "Aménagement de peine (JAP)",
    "protection_order": "Ordonnance de protection (JAF)",
    "voluntary": "Démarche volontaire",
}
URGENCY = {"standard": "Normale", "urgent": "Urgente"}
LANGUAGES = {
    "fr": "français",
    "en": "anglais",
    "ar": "arabe",
    "es": "espagnol",
    "pt": "portugais",
    "it": "italien",
    "de": "allemand",
    "tr": "turc",
    "ro": "roumain",
    "ru": "russe",
    "uk": "ukrainien",
    "pl": "polonais",
    "zh": "chinois",
    "vi": "vietnamien",
    "fa": "persan",
    "ps": "pachto",
    "ta": "tamoul",
    "wo": "wolof",
    "bm": "bambara",
    "sq": "albanais",
    "ka": "géorgien",
    "hy": "arménien",
    "ber": "berbère",
}
STATUS = {
    "received": "Reçue, en cours d'orientation",
    "offered": "Proposée à un centre",
    "placed": "Prise en charge par le centre",
    "waitlisted": "En liste d'attente",
    "unroutable": "Sans site possible (coordinateur alerté)",
    "escalated": "Confiée à un coordinateur",
    "withdrawn": "Retirée par le prescripteur",
    "completed": "Parcours terminé",
    "terminated": "Parcours interrompu",
    "rejected": "Refusée à la réception",
}
DECLINE_REASONS = {
    "no_capacity": "Plus de place disponible",
    "not_eligible": "La personne ne relève pas de nos critères d'accueil",
    "victim_site_conflict": "Incompatibilité avec la victime (même site ou même lieu)",
    "other": "Autre motif",
}
PATH_REPORTS = {
    "appointment_scheduled": "Rendez-vous fixé",
    "attended": "Présence constatée",
    "no_show": "Absence constatée",
    "module_completed": "Module terminé",
    "path_completed": "Parcours terminé",
    "path_terminated": "Parcours interrompu",
    "breach_suspected": "Manquement suspecté à l'obligation",
}
TERMINATION_REASONS = {
    "completed_early": "Achevé avant le terme prévu",
    "excluded": "Exclusion par le centre",
    "moved_away": "Déménagement",
    "refused": "Refus de la personne",
    "other": "Autre motif",
}
ESCALATION_REASONS = {
    "attempts_exhausted": "plusieurs sites ont décliné ou n'ont pas répondu",
    "no_feasible_site": "aucun site ne peut accueillir la personne en l'état",
    "urgent_no_place": "orientation urgente sans place disponible à portée",
}
UNROUTABLE_REASONS = {
    "no_site_offers_services": "aucun site ne propose les services demandés",
    "all_sites_excluded": "tous les sites possibles sont exclus par les interdictions",
    "territory_not_served": "le territoire n'est couvert par aucun centre",
}
# Why intake refused what a prescriber sent, in words a court clerk understands.
REJECTION_REASONS = {
    "not_utf8": "Le message n'est pas un texte UTF-8 lisible.",
    "not_json": "Le message n'est pas un document JSON valide.",
    "empty_message": "Le message est vide.",
    "missing_key": "La clé du message (identifiant de l'orientation) manque.",
    "key_mismatch": "La clé du message ne correspond pas à l'identifiant de l'orientation.",
    "message_too_large": "Le message dépasse la taille autorisée.",
    "bad_header": "Un en-tête du message est illisible.",
    "unknown_event_type": "Le type de message est inconnu.",
    "unknown_schema_version": "La version du format n'est plus ou pas encore acceptée.",
    "missing_field": "Un champ obligatoire manque.",
    "wrong_type": "Un champ n'a pas le type attendu.",
    "unknown_enum_value": "Un champ contient une valeur hors de la liste autorisée.",
    "invalid_value": "Un champ contient une valeur invalide.",
    "unknown_commune": "La commune indiquée est inconnue.",
    "unknown_postal_code": "Le code postal indiqué est inconnu.",
    "ambiguous_postal_code": (
        "Le code postal correspond à plusieurs communes : précisez le code INSEE."
    ),
    "territory_not_served": "La personne réside sur un territoire non couvert par le réseau CPCA.",
    "impossible_date": "Une date est impossible.",
    "future_date": "Une date est dans le futur.",
    "conflicting_duplicate": "Une orientation différente porte déjà cet identifiant.",
    "unknown_prescriber": "Le prescripteur n'est pas enregistré.",
    "bad_signature": "La signature du message est absente ou invalide.",
    "replayed_message": "Le message est trop ancien ou a déjà été reçu (rejeu).",
    "outside_jurisdiction": "L'orientation sort du ressort du prescripteur.",
    "unknown_referral": "L'orientation visée est inconnue.",
    "referral_closed": "L'orientation visée est close.",
    "retries_exhausted": "Le traitement a échoué après plusieurs tentatives.",
    "processing_error": "Erreur de traitement : l'équipe d'exploitation est prévenue.",
    "not_offered_to_sender": "L'orientation n'est pas proposée à l'expéditeur.",
    "unknown_site": "Le site indiqué est inconnu.",
}
ROLES = {"centre": "Centre", "prescriber": "Prescripteur", "operator": "Opérateur"}


def label(table: Mapping[str, str], code: str | None) -> str:
    if code is None:
        return ""
    return table.get(code, code)


def language(code: str | None) -> str:
    if not code:
        return ""
    name = LANGUAGES.get(code)
    return f"{name} ({code})" if name else code
